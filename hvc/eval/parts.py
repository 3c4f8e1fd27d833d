"""Human-part propagation on VIP (Video Instance-level Parsing): read, propagate, score.

Paper §4.1 and Table 5 (UVC protocol): the first annotated frame's part map (19 parts + background)
is propagated through the video at 560x560 and scored by mIoU. HVC's public code has no
VIP script, so the protocol follows the public code that defined it:

- Layout and list (Liusifei/UVC ``test_mask_vip.py`` and README; the same layout in
  xvjiarui/VFS ``mmaction/datasets/vip_dataset.py``): ``VIP_Fine/Images/<video>/<frame>.jpg``,
  ``VIP_Fine/Annotations/Category_ids/<video>/<frame>.png`` and
  ``VIP_Fine/lists/val_videos.txt`` (one video name a line). VIP annotates one frame in
  every 25 and ``VIP_Fine/Images`` holds only those frames (names are 12-digit frame
  numbers, e.g. ``000000000026.jpg``), so every frame read here is an annotated one.
- Resolution (UVC ``test_mask_vip.py --scale_size 560 560``): frames are resized to
  560x560 (not keeping the aspect ratio), the predicted maps are resized back to each
  frame's original size with nearest-neighbour sampling and scored there; UVC's
  ``eval_vip.py`` compares predictions with the ground truth at the ground truth's size.
  (VFS instead resizes the short side to 560 keeping the ratio.)
- Score (UVC ``eval_vip.py``, which its header credits to xiaolonw/TimeCycle; VFS
  ``mmaction/core/evaluation/iou.py``): one confusion matrix summed over every scored
  frame of every video (not per video); IoU_c = TP / (GT + predicted - TP); classes whose
  union is empty over the whole set have no IoU and are left out of the mean (both use
  ``np.nanmean``); ground-truth pixels labelled 255 are void and ignored (VFS
  ``ignore_index=255``; UVC keeps only ground-truth labels in [0, 20)). Both score every
  annotated frame, the first one included (UVC copies the first annotation into its
  prediction folder; VFS scores ``total_frames`` results); ``include_first=False`` gives
  the DAVIS-style variant that leaves it out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hvc.eval.video import Video, check_sequence_name, match_masks
from hvc.io import DataError, frame_order, read_lines, read_mask
from hvc.propagation import PropagationConfig, propagate_video

VIP_FOLDER = "VIP_Fine"
VOID = 255  # ground-truth label that is never scored
VIP_SIZE = 560  # paper §4.1; UVC --scale_size 560 560
VIP_CLASSES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks", "pants", "gloves",
    "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg", "right-shoe",
    "left-shoe",
)  # fmt: skip


# --------------------------------------------------------------------------- reading


def vip_folder(root: str | Path) -> Path:
    """The ``VIP_Fine`` folder for ``root``.

    ``root`` is the folder that holds ``VIP_Fine/`` (where the dataset's zip is
    extracted; hvc/config/datasets.yaml lists ``VIP_Fine/Images`` below it). ``VIP_Fine``
    itself is accepted too: it is used as is when it has no ``VIP_Fine`` child.
    """
    root = Path(root)
    if not (root / VIP_FOLDER).is_dir() and root.name == VIP_FOLDER:
        return root
    return root / VIP_FOLDER


def read_vip(root: Path, split: str = "val") -> list[Video]:
    """Read the VIP videos listed in ``VIP_Fine/lists/<split>_videos.txt``.

    Args:
        root: the folder holding ``VIP_Fine/`` (or ``VIP_Fine`` itself; see :func:`vip_folder`).
        split: list name: ``"val"`` (50 videos) reads ``lists/val_videos.txt``.
    Returns:
        the videos in list order; ``frames`` are the JPEGs of ``Images/<video>`` in frame
        order and ``masks`` maps the index of every frame that has a part map in
        ``Annotations/Category_ids/<video>`` to that PNG (in VIP_Fine: every frame).
        A list line's last path component is the video name (as UVC reads it).
    Raises:
        DataError: naming the file: the list is missing, unreadable or empty; it names a
            video whose image or annotation folder does not exist; a video has fewer
            than 2 frames; a mask has no frame of the same name; the first frame has no mask.
    """
    base = vip_folder(root)
    listing = base / "lists" / f"{split}_videos.txt"
    lines = read_lines(listing, "video list")
    if not lines:
        raise DataError(listing, "video list names no videos")
    videos = []
    for n, line in enumerate(lines, 1):
        name = check_sequence_name(listing, n, line.rstrip("/").split("/")[-1], "video")
        frame_dir = base / "Images" / name
        mask_dir = base / "Annotations" / "Category_ids" / name
        for folder in (frame_dir, mask_dir):
            if not folder.is_dir():
                raise DataError(listing, f"lists video {name!r} but {folder} does not exist")
        frames = sorted(frame_dir.glob("*.jpg"), key=frame_order)
        if len(frames) < 2:
            raise DataError(frame_dir, f"video has {len(frames)} frame(s); propagation needs at least 2")
        index = {p.stem: i for i, p in enumerate(frames)}
        masks = match_masks(mask_dir, frame_dir, index)
        if 0 not in masks:
            raise DataError(mask_dir / f"{frames[0].stem}.png", f"first frame {frames[0]} has no part annotation")
        videos.append(Video(name, frames, masks, greyscale_labels=True))  # Category_ids: part ids as grey values
    return videos


# --------------------------------------------------------------------------- propagation


def _resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8, bilinear (half-pixel centres, no
    antialiasing: what UVC's ``cv2.resize`` does)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(..., H, W) label maps → (..., h, w), nearest neighbour at pixel centres (PIL's
    NEAREST, which UVC's ``scipy.misc.imresize(..., "nearest")`` calls)."""
    x = torch.from_numpy(np.ascontiguousarray(labels))
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, *x.shape[-2:]).float()
    x = F.interpolate(x, hw, mode="nearest-exact")
    return x.to(torch.uint8).reshape(*lead, *hw).numpy()


def propagate_parts(
    encoder: torch.nn.Module,
    frames: list[np.ndarray],
    first_labels: np.ndarray,
    cfg: PropagationConfig,
    size: int = VIP_SIZE,
    num_classes: int = len(VIP_CLASSES),
    layer: str = "layer3",
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> np.ndarray:
    """Propagate a part map through a video at ``size`` x ``size`` (paper §4.1; UVC).

    Frames are resized to size x size (bilinear) and the first part map (nearest), then
    :func:`hvc.propagation.propagate_video` runs at that input size: one channel per part
    id from 0 to the largest id in the first frame, so a part absent from the first
    frame is never predicted (the protocol: UVC's one-hot has max+1 channels too). The
    size x size predictions are resized back to the frames' size (nearest).

    Args:
        encoder: ``encoder(x, layer)``: (1, 3, h, w) → (1, C, h/8, w/8).
        frames: T >= 2 frames (H, W, 3) uint8, all of the first part map's size.
        first_labels: (H, W) uint8 part ids in [0, num_classes) of frame 0, 0 = background;
            void pixels (255) are seeded as background.
        cfg: propagation hyper-parameters.
        size: side of the square network input in pixels (560 for VIP).
        num_classes: number of part ids, background included (20 for VIP).
        layer, device, bf16: as for :func:`~hvc.propagation.propagate_video`.
    Returns:
        (T, H, W) uint8 part ids; frame 0 is ``first_labels`` (void set to 0).
    Raises:
        ValueError: a frame's size differs from the part map's, a part id is outside
            [0, num_classes) and not void, or the first part map has no part.
    """
    first = np.asarray(first_labels)
    H, W = first.shape
    for t, f in enumerate(frames):
        if f.shape[:2] != (H, W):
            raise ValueError(f"frame {t} is {f.shape[1]}x{f.shape[0]} but the first part map is {W}x{H}")
    seeds = np.where(first == VOID, 0, first).astype(np.uint8)
    if seeds.max() >= num_classes:
        raise ValueError(f"first part map has id {int(seeds.max())}; part ids must lie in [0, {num_classes}) or be {VOID}")
    small = propagate_video(
        encoder,
        [_resize_frame(f, size) for f in frames],
        _resize_labels(seeds, (size, size)),
        cfg,
        resolution=None,
        layer=layer,
        device=device,
        bf16=bf16,
    )
    out = _resize_labels(small, (H, W))
    out[0] = seeds
    return out


# --------------------------------------------------------------------------- scoring


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 pixel counts: row = ground truth, column = prediction.

    Ground-truth pixels equal to :data:`VOID` are not counted.

    Raises:
        ValueError: shapes differ, or a ground-truth label (other than void) or a
            predicted label lies outside [0, num_classes).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    keep = gt != VOID
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    if g.size and g.max() >= num_classes:
        raise ValueError(f"ground-truth label {int(g.max())} outside [0, {num_classes}) and not void ({VOID})")
    if p.size and p.max() >= num_classes:
        raise ValueError(f"predicted label {int(p.max())} outside [0, {num_classes})")
    return np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU_c = TP / (GT_c + predicted_c - TP) from a confusion matrix; NaN where the union is empty."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def evaluate_parts(
    videos: list[Video], predictions: Path, num_classes: int = len(VIP_CLASSES), include_first: bool = True
) -> dict:
    """mIoU of predicted part maps over the 19 parts + background (VIP protocol).

    Args:
        videos: the ground truth (:func:`read_vip`); every frame in ``masks`` is scored.
        predictions: folder of ``<video>/<frame stem>.png`` part maps (palette or
            greyscale PNGs, read by :func:`hvc.io.read_mask`), each of its frame's size.
        num_classes: number of part ids, background included.
        include_first: also score frame 0 (whose prediction is the given annotation), as
            UVC's and VFS's VIP evaluations do.
    Returns:
        ``{"mIoU": mean over classes with a non-empty union (fraction),
        "IoU_per_class": [num_classes floats, None where neither ground truth nor
        prediction has the class in any scored frame], "frames": frames scored,
        "videos": videos with at least one scored frame}``; from one confusion matrix
        summed over all scored frames, void (255) ground-truth pixels ignored.
    Raises:
        DataError: naming the file: a missing or unreadable prediction or ground-truth
            mask, a prediction whose size differs from its ground truth, a label out of
            range; or (naming ``predictions``) nothing to score.
    """
    predictions = Path(predictions)
    conf = np.zeros((num_classes, num_classes), np.int64)
    n_frames = n_videos = 0
    for video in videos:
        scored = [t for t in sorted(video.masks) if include_first or t > 0]
        for t in scored:
            gt_path = video.masks[t]
            pred_path = predictions / video.name / f"{video.frames[t].stem}.png"
            if not pred_path.is_file():
                raise DataError(pred_path, f"no prediction for frame {t} of video {video.name!r} (ground truth {gt_path})")
            gt, pred = read_mask(gt_path, greyscale_labels=True), read_mask(pred_path, greyscale_labels=True)
            if gt.shape != pred.shape:
                raise DataError(
                    pred_path,
                    f"prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}",
                )
            for labels, path, ignore in ((gt, gt_path, VOID), (pred, pred_path, None)):
                bad = labels[(labels >= num_classes) & (labels != ignore)]
                if bad.size:
                    raise DataError(path, f"label {int(bad.max())} is not a part id in [0, {num_classes})")
            conf += confusion(gt, pred, num_classes)
        n_frames += len(scored)
        n_videos += bool(scored)
    if n_frames == 0:
        raise DataError(predictions, "no annotated frame to score")
    iou = iou_per_class(conf)
    if np.isnan(iou).all():
        raise DataError(predictions, "no pixel to score: every scored ground-truth pixel is void")
    return {
        "mIoU": float(np.nanmean(iou)),
        "IoU_per_class": [None if np.isnan(v) else float(v) for v in iou],
        "frames": n_frames,
        "videos": n_videos,
    }
