"""JHMDB pose tracking by label propagation (paper §4.1, Table 5; the CRW protocol).

In the order it runs: read the split-1 test videos and their 15 joints
(:func:`read_jhmdb`) → resize every frame to 320 x 320 and turn the first frame's joints
into Gaussian maps at feature resolution (:func:`joints_to_heatmaps`) → propagate the
maps with :func:`hvc.propagation.propagate_soft` → read each joint out of its map by the
top-3 weighted argmax (:func:`heatmaps_to_joints`) and map it back to the original frame
(:func:`propagate_pose`) → score PCK@0.1 and PCK@0.2 (:func:`pck`, :func:`evaluate_pose`).

Conventions taken from the CRW code (ajabri/videowalk: ``code/data/jhmdb.py``,
``code/utils/test_utils.py``, ``code/eval/eval_pck.py``):

- ``pos_img`` holds 1-based MATLAB pixels; 1 is subtracted. Frames are resized to
  size x size whatever their aspect ratio, and a joint at pixel x lies at feature cell
  x * size / W / stride; cell i stands for input pixel i * stride (no half-cell offset),
  in both directions, so the offset cancels.
- Each joint is an unnormalised Gaussian (peak 1, sigma 0.5 cells) centred on the
  nearest cell and cut to a 3-sigma square window. CRW also appends a background channel
  (1 where every joint map is 0); propagation is linear in each label channel and the
  readout ignores that channel, so it is left out here.
- Readout: the 3 largest values of a joint's map, normalised to sum 1, weight the (x, y)
  indices of their cells. A map with no mass gives no prediction (CRW: -1; here NaN).
- PCK: per frame, the reference distance is 0.6 x the diagonal of the box around that
  frame's ground-truth joints; a joint is correct when its distance to the ground truth
  is <= alpha x that distance. The first frame is not scored, nor are joints without a
  prediction (they are also left out of the box). The score is the mean over the 15
  joints of each joint's fraction correct, pooled over all scored frames of all videos
  (equal to the fraction of all scored joints whenever every joint is predicted).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from scipy.io.matlab import MatReadError

from hvc.io import DataError, read_image, read_json, read_lines, write_json
from hvc.propagation import PropagationConfig, encode, preprocess, propagate_soft

NUM_JOINTS = 15
TEST_SPLIT_SUFFIX = "_test_split1.txt"  # JHMDB splits/<action>_test_split1.txt, label 2 = test
BOX_SCALE = 0.6  # CRW eval_pck.py: reference distance = 0.6 x ground-truth box diagonal


# --------------------------------------------------------------------------- reading JHMDB


@dataclass
class PoseVideo:
    """One JHMDB video.

    Attributes:
        name: ``<action>/<video>``.
        frames: frame files in temporal order (``00001.png``, ``00002.png``, ...).
        joints: (T, 15, 2) float ground-truth joints, x and y in 0-based pixels of the
            original frames (``pos_img`` - 1).
    """

    name: str
    frames: list[Path]
    joints: np.ndarray

    def read_frames(self) -> list[np.ndarray]:
        """All frames as (H, W, 3) uint8 arrays; raises DataError naming a bad file."""
        return [read_image(p) for p in self.frames]

    def check(self) -> None:
        """Decode every frame once (as :meth:`hvc.eval.readers.Video.check`).

        Raises:
            DataError: naming a missing or unreadable frame, or one whose size differs
                from the first frame's.
        """
        size = None
        for path in self.frames:
            hw = read_image(path).shape[:2]
            size = size or hw
            if hw != size:
                raise DataError(path, f"frame is {hw[1]}x{hw[0]} but {self.frames[0]} is {size[1]}x{size[0]}")


def read_jhmdb(root: str | os.PathLike[str], split_file: str | os.PathLike[str] | None = None) -> list[PoseVideo]:
    """The JHMDB videos evaluated by the CRW/UVC protocol, with their joints.

    Layout (the official archives extracted under ``root``)::

        Rename_Images/<action>/<video>/00001.png ...
        joint_positions/<action>/<video>/joint_positions.mat   (pos_img: 2 x 15 x T)
        splits/<action>_test_split1.txt                         (lines "<video>.avi <1|2>")

    Args:
        root: the JHMDB folder.
        split_file: a text file of ``<action>/<video>`` lines to read instead of the
            split-1 test videos (the lines marked 2 in ``splits/*_test_split1.txt``).
    Returns:
        the videos in the order listed (split files in action order).
    Raises:
        DataError: naming the file or folder: a missing split file, frame folder or
            ``joint_positions.mat``; a malformed split line; frames not numbered 1..T; a
            ``pos_img`` that is missing, not 2 x 15 x T or not finite; or a ``pos_img``
            whose T differs from the number of frames on disk. (CRW propagates every frame
            on disk and scores the first T of the .mat, so extra frames would be ignored
            and missing ones would crash it; here any difference is an error.)
    """
    root = Path(root)
    names = _listed_videos(Path(split_file)) if split_file is not None else _test_videos(root / "splits")
    return [_read_video(root, name) for name in names]


def _test_videos(splits: Path) -> list[str]:
    """``<action>/<video>`` of the lines marked 2 (test) in every ``<action>_test_split1.txt``."""
    if not splits.is_dir():
        raise DataError(splits, f"folder not found (expected the JHMDB split files <action>{TEST_SPLIT_SUFFIX})")
    files = sorted(splits.glob(f"*{TEST_SPLIT_SUFFIX}"))
    if not files:
        raise DataError(splits, f"no <action>{TEST_SPLIT_SUFFIX} split files")
    names = []
    for path in files:
        action = path.name[: -len(TEST_SPLIT_SUFFIX)]
        for n, line in enumerate(read_lines(path, "split file"), start=1):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("1", "2"):
                raise DataError(path, f"line {n}: expected '<video>.avi <1|2>', got {line!r}")
            if parts[1] == "2":
                names.append(f"{action}/{parts[0].removesuffix('.avi')}")
    if not names:
        raise DataError(splits, "the split files list no test video (label 2)")
    return names


def _listed_videos(path: Path) -> list[str]:
    """``<action>/<video>`` lines of a user-given list."""
    names = []
    for n, line in enumerate(read_lines(path, "split file"), start=1):
        parts = line.strip().strip("/").split("/")
        if len(parts) != 2 or not all(parts) or any(part in (".", "..") or "\\" in part for part in parts):
            raise DataError(path, f"line {n}: expected '<action>/<video>' (plain folder names), got {line!r}")
        names.append("/".join(parts))
    if not names:
        raise DataError(path, "lists no video")
    return names


def _read_video(root: Path, name: str) -> PoseVideo:
    """Frames and joints of ``<action>/<video>``, checked against each other."""
    folder = root / "Rename_Images" / name
    if not folder.is_dir():
        raise DataError(folder, "frame folder not found")
    frames = sorted((p for p in folder.glob("*.png") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not frames:
        raise DataError(folder, "no PNG frames (expected 00001.png, 00002.png, ...)")
    numbers = [int(p.stem) for p in frames]
    if numbers != list(range(1, len(frames) + 1)):
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        raise DataError(folder, f"frames are not numbered 1..{len(frames)} (missing {missing[:5]})")
    mat = root / "joint_positions" / name / "joint_positions.mat"
    joints = _read_joints(mat)
    if len(joints) != len(frames):
        raise DataError(mat, f"pos_img has {len(joints)} frames but {folder} holds {len(frames)} PNG frames")
    return PoseVideo(name=name, frames=frames, joints=joints)


def _read_joints(mat: Path) -> np.ndarray:
    """``pos_img`` (2, 15, T), 1-based → (T, 15, 2) 0-based float pixels."""
    if not mat.is_file():
        raise DataError(mat, "joint file not found")
    try:
        data = scipy.io.loadmat(mat)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError, zlib.error) as e:
        raise DataError(mat, f"not a readable MATLAB file ({type(e).__name__}: {e})") from None
    if "pos_img" not in data:
        raise DataError(mat, f"no 'pos_img' variable (has {sorted(k for k in data if not k.startswith('__'))})")
    pos = np.asarray(data["pos_img"])
    if pos.ndim == 2:  # MATLAB drops a trailing singleton dimension: a one-frame video
        pos = pos[..., None]
    if pos.ndim != 3 or pos.shape[:2] != (2, NUM_JOINTS) or not np.issubdtype(pos.dtype, np.number):
        raise DataError(mat, f"pos_img has shape {pos.shape} ({pos.dtype}), expected 2 x {NUM_JOINTS} x T numbers")
    joints = pos.transpose(2, 1, 0).astype(np.float64) - 1.0
    if not np.isfinite(joints).all():
        raise DataError(mat, "pos_img holds non-finite coordinates")
    return joints


# --------------------------------------------------------------------------- joints <-> maps


def joints_to_heatmaps(
    joints: np.ndarray, size_hw: tuple[int, int], stride: float, sigma: float = 0.5
) -> torch.Tensor:
    """Gaussian maps of joints at feature resolution (CRW ``code/data/jhmdb.py``).

    Joint j's map is exp(-d² / (2 sigma²)), d the distance in cells to the cell nearest the
    joint (peak 1, not normalised to sum 1), zero outside the square of half-width
    3 sigma around that cell. A joint whose window misses the map gets an all-zero map.
    (CRW centres on the cell ``int(c - 3 sigma) + 3 sigma``: the nearest one except within
    1.5 cells of the top or left border, where truncation toward zero shifts it.)

    Args:
        joints: (J, 2) x, y in 0-based pixels of the network input.
        size_hw: (h, w) of the feature map.
        stride: input pixels per feature cell; pixel x lies at cell x / stride.
        sigma: Gaussian width in feature cells (0.5 in CRW and HVC).
    Returns:
        (J, h, w) float32 maps.
    """
    h, w = size_hw
    centre = np.floor(np.asarray(joints, np.float64) / stride + 0.5)  # nearest cell (x, y)
    cx = torch.from_numpy(centre[:, 0]).float().view(-1, 1, 1)
    cy = torch.from_numpy(centre[:, 1]).float().view(-1, 1, 1)
    dx = torch.arange(w, dtype=torch.float32).view(1, 1, w) - cx
    dy = torch.arange(h, dtype=torch.float32).view(1, h, 1) - cy
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    inside = (dx.abs() <= 3 * sigma) & (dy.abs() <= 3 * sigma)
    return torch.where(inside, g, torch.zeros(()))


def heatmaps_to_joints(maps: torch.Tensor, topk: int = 3) -> np.ndarray:
    """Top-k weighted argmax of each joint map (CRW ``process_pose`` in ``code/utils/test_utils.py``).

    The ``topk`` largest values of a map, divided by their sum, weight the x (column) and
    y (row) indices of their cells.

    Args:
        maps: (J, h, w) non-negative soft labels.
        topk: cells averaged (3 in CRW and HVC).
    Returns:
        (J, 2) float64 x, y in feature cells; NaN for a map with no mass (CRW writes -1).
    """
    J, h, w = maps.shape
    flat = maps.detach().float().reshape(J, -1).cpu()
    vals, idx = flat.topk(min(topk, h * w), dim=1)
    total = vals.sum(1, keepdim=True)
    weights = vals / total.clamp_min(torch.finfo(torch.float32).tiny)
    xy = torch.stack([(weights * (idx % w)).sum(1), (weights * (idx // w)).sum(1)], dim=1).double()
    xy[flat.sum(1) <= 0] = float("nan")
    return xy.numpy()


# --------------------------------------------------------------------------- propagation


@torch.no_grad()
def propagate_pose(
    encoder: torch.nn.Module,
    frames: Sequence[np.ndarray],
    joints0: np.ndarray,
    cfg: PropagationConfig,
    size: int = 320,
    layer: str = "layer3",
    device: torch.device | str = "cpu",
    bf16: bool = False,
    sigma: float = 0.5,
    topk: int = 3,
) -> np.ndarray:
    """Track joints through a video by propagating first-frame heatmaps (paper §4.1; CRW ``code/test.py``).

    Every frame is resized to size x size (aspect ratio not kept, as CRW's ``JhmdbSet``)
    and encoded; frame 0's joints become Gaussian maps at feature resolution
    (:func:`joints_to_heatmaps`), propagated with :func:`hvc.propagation.propagate_soft`,
    read out per frame by the top-k weighted argmax (:func:`heatmaps_to_joints`) and
    mapped back to the original frame's pixels.

    Args:
        encoder: callable ``encoder(x, layer)``: (1, 3, size, size) → (1, C, h, w).
        frames: T frames (H, W, 3) uint8, all of one size.
        joints0: (J, 2) x, y of frame 0's joints in 0-based original pixels.
        cfg: propagation hyper-parameters.
        size: side of the square network input (320 in CRW and HVC).
        layer: encoder layer used for matching.
        device, bf16: where and in which precision features are computed.
        sigma, topk: heatmap width in cells and cells of the readout (0.5 and 3).
    Returns:
        (T, J, 2) float64 x, y in 0-based original pixels; frame 0 is ``joints0``; NaN
        where a joint's map lost all mass.
    Raises:
        ValueError: no frames, frames of different sizes, or joints0 not (J, 2).
    """
    joints0 = _checked_pose_input(frames, joints0)
    H, W = frames[0].shape[:2]
    to_input = np.array([size / W, size / H])  # original pixels → input pixels, per axis

    def features(frame: np.ndarray) -> torch.Tensor:
        return _square_features(encoder, frame, size, layer, device, bf16)

    f0 = features(frames[0])
    h, w = f0.shape[-2:]
    stride = size / w
    if size / h != stride:
        raise ValueError(f"a {size} x {size} input gave a {h} x {w} feature map: not one stride")
    maps = joints_to_heatmaps(joints0 * to_input, (h, w), stride, sigma).to(device)
    out = np.empty((len(frames), len(joints0), 2))
    out[0] = joints0
    rest = (features(frame) for frame in frames[1:])
    for t, pred in propagate_soft((f0, maps), rest, cfg):
        out[t] = heatmaps_to_joints(pred, topk) * stride / to_input
    return out


def _checked_pose_input(frames: Sequence[np.ndarray], joints0: np.ndarray) -> np.ndarray:
    """``joints0`` as (J, 2) float64, after checking it and the frames (see :func:`propagate_pose`).

    Raises:
        ValueError: no frames, frames of different sizes, or joints0 not (J, 2).
    """
    joints0 = np.asarray(joints0, np.float64)
    if not frames:
        raise ValueError("no frames to track joints through")
    if joints0.ndim != 2 or joints0.shape[1] != 2:
        raise ValueError(f"joints0 must be (J, 2) x, y, got shape {joints0.shape}")
    H, W = frames[0].shape[:2]
    if any(f.shape[:2] != (H, W) for f in frames):
        raise ValueError(f"frames differ in size (frame 0 is {H} x {W})")
    return joints0


def _square_features(encoder, frame: np.ndarray, size: int, layer: str, device, bf16: bool) -> torch.Tensor:
    """Features (C, h, w) of a (H, W, 3) uint8 frame resized to size x size (CRW ``JhmdbSet``)."""
    x = preprocess(frame, None).to(device)
    x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
    return encode(encoder, x, layer, bf16)


# --------------------------------------------------------------------------- predictions on disk


def write_pose(path: str | os.PathLike[str], joints: np.ndarray) -> None:
    """Write one video's predicted joints as JSON, atomically.

    The file holds ``{"joints": [[[x, y] | null per joint] per frame]}``, pixels of the
    original frames; null for a joint without a prediction (NaN).

    Raises:
        ValueError: joints not (T, J, 2).
    """
    joints = np.asarray(joints, np.float64)
    if joints.ndim != 3 or joints.shape[2] != 2:
        raise ValueError(f"joints must be (T, J, 2), got shape {joints.shape}")
    rows = [[None if np.isnan(p).any() else [float(p[0]), float(p[1])] for p in frame] for frame in joints]
    write_json(path, {"joints": rows})


def read_pose(path: str | os.PathLike[str]) -> np.ndarray:
    """Read joints written by :func:`write_pose`.

    Returns:
        (T, J, 2) float64 x, y pixels; NaN where the file has null.
    Raises:
        DataError: naming the file when it is missing, not JSON, or not the layout above.
    """
    data = read_json(path)
    layout = "expected {'joints': [[[x, y] or null for each joint] for each frame]}"
    rows = data.get("joints") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise DataError(path, layout)
    try:
        joints = np.array([[(np.nan, np.nan) if p is None else p for p in frame] for frame in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, f"{layout}; found entries that are not [x, y] numbers") from None
    if joints.ndim != 3 or joints.shape[2] != 2:
        raise DataError(path, f"{layout}; got an array of shape {joints.shape}")
    return joints


# --------------------------------------------------------------------------- PCK


def pck(
    pred: np.ndarray, gt: np.ndarray, thresholds: Iterable[float] = (0.1, 0.2)
) -> tuple[dict[float, np.ndarray], np.ndarray]:
    """Per-joint PCK counts of one video (CRW ``code/eval/eval_pck.py``).

    In each frame t >= 1, the joints with a prediction (finite x, y) are scored; the
    reference distance is 0.6 x the diagonal of the box around those joints' ground
    truth; joint j is correct at alpha when ||pred - gt|| <= alpha x reference. A frame
    whose box is a single point has reference 0 and no correct joint (as in CRW).

    Args:
        pred: (T, J, 2) predicted x, y pixels; NaN = no prediction.
        gt: (T, J, 2) ground-truth x, y pixels (same frame and units).
        thresholds: the alphas.
    Returns:
        ({alpha: (J,) int joints correct}, (J,) int joints scored); frame 0 never counts.
    Raises:
        ValueError: pred and gt differ in shape or are not (T, J, 2).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (T, J, 2)")
    pred, gt = pred[1:], gt[1:]  # the first frame is given, not scored
    scored = np.isfinite(pred).all(axis=2)  # (T-1, J)
    lo = np.where(scored[..., None], gt, np.inf).min(axis=1)  # (T-1, 2) box of the scored joints
    hi = np.where(scored[..., None], gt, -np.inf).max(axis=1)
    reference = BOX_SCALE * np.linalg.norm(hi - lo, axis=1)  # (T-1,); inf where nothing is scored
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.linalg.norm(pred - gt, axis=2) / reference[:, None]  # (T-1, J), NaN without prediction
    correct = {a: ((dist <= a) & scored).sum(0) for a in thresholds}
    return correct, scored.sum(0)


def evaluate_pose(
    videos: Sequence[PoseVideo], predictions: Mapping[str, np.ndarray], thresholds: Iterable[float] = (0.1, 0.2)
) -> dict[str, float | int]:
    """PCK over a set of videos (CRW ``code/eval/eval_pck.py``).

    Counts of :func:`pck` are pooled per joint over all videos; the score at alpha is the
    mean over joints of each joint's fraction correct (joints never scored left out).

    Args:
        videos: the ground truth.
        predictions: {video name: (T, J, 2) predicted pixels}, one per video.
        thresholds: the alphas; each gives a key ``PCK@<alpha>``.
    Returns:
        {"PCK@0.1": fraction, "PCK@0.2": fraction, "videos": n, "joints_scored": n}.
    Raises:
        ValueError: a video without a prediction, or one of another shape.
    """
    thresholds = tuple(thresholds)
    correct = {a: 0 for a in thresholds}
    scored = 0
    for video in videos:
        if video.name not in predictions:
            raise ValueError(f"no prediction for video {video.name!r}")
        pred = np.asarray(predictions[video.name])
        if pred.shape != video.joints.shape:
            raise ValueError(f"{video.name}: prediction has shape {pred.shape}, ground truth {video.joints.shape}")
        c, s = pck(pred, video.joints, thresholds)
        for a in thresholds:
            correct[a] = correct[a] + c[a]
        scored = scored + s
    result: dict[str, float | int] = {}
    seen = np.asarray(scored) > 0
    for a in thresholds:
        frac = np.asarray(correct[a], np.float64)[seen] / np.asarray(scored)[seen] if seen.any() else np.array([])
        result[f"PCK@{a:g}"] = float(frac.mean()) if frac.size else float("nan")
    result["videos"] = len(videos)
    result["joints_scored"] = int(np.sum(scored))
    return result
