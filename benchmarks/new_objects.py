"""Objects that appear after frame 0: one branch per reference frame vs one shared reference.

Writes a generated video in the YouTube-VOS layout (``valid/JPEGImages``, ``valid/Annotations``
with a mask only where an object first appears, ``valid/meta.json``): a textured scene
pans by ``--shift`` pixels per frame; object 1 is annotated in frame 0, object 2 (a patch
of another texture) enters the scene at frame ``--appear`` and is annotated there. The
video is read back with :func:`hvc.eval.readers.read_ytvos` and propagated with the
random-initialisation encoder twice: by :func:`hvc.propagation.propagate_video` (one
branch per frame where objects appear, as the official code) and by
:func:`propagate_shared`, the earlier reading (one reference shared by all objects, kept
here only, for this comparison, because it measured worse). Prints each object's IoU with
its ground truth over the frames after object 2 appears, and object 2's pixel count.

    python benchmarks/new_objects.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from hvc.eval.readers import read_ytvos
from hvc.io import write_json, write_mask
from hvc.methods.hvc.model import build_encoder_for_propagation
from hvc.propagation import (
    PropagationConfig,
    WindowCache,
    context_frames,
    encode,
    labels_to_onehot,
    predict_windowed,
    preprocess,
    propagate_video,
    resize_labels,
)


def _texture(h: int, w: int, seed: int, sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((h, w, 3)), sigma=(sigma, sigma, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (255 * img).astype(np.uint8)


def make_video(
    root: Path, frames: int = 8, appear: int = 3, shift: int = 4, size: tuple[int, int] = (128, 192)
) -> tuple[Path, np.ndarray]:
    """Write the video under ``root/valid``; return (split folder, (T, H, W) ground truth)."""
    H, W = size
    scene = _texture(H, W + shift * frames, seed=0)
    patch = _texture(32, 40, seed=1, sigma=2.0)
    y2, x2 = 80, W - 56 + shift * appear  # object 2 in scene coordinates, inside the view from frame ``appear`` on
    split = root / "valid"
    name = "v0"
    gt = np.zeros((frames, H, W), np.uint8)
    stems = [f"{5 * i:05d}" for i in range(frames)]
    for t in range(frames):
        # camera pans right over the scene: scene content moves left by ``shift`` px per frame
        x0 = shift * t
        view = scene[:, x0 : x0 + W].copy()
        labels = np.zeros((H, W), np.uint8)
        labels[24:64, 64 - x0 : 104 - x0] = 1  # object 1: a square of the scene
        if t >= appear:
            px = x2 - x0
            view[y2 : y2 + 32, px : px + 40] = patch
            labels[y2 : y2 + 32, px : px + 40] = 2
        gt[t] = labels
        # a little sensor noise: no two frames share a cell's content exactly (no tied affinities)
        noise = np.random.default_rng(100 + t).integers(-3, 4, view.shape)
        view = np.clip(view.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        (split / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(view).save(split / "JPEGImages" / name / f"{stems[t]}.jpg", quality=95)
    write_mask(split / "Annotations" / name / f"{stems[0]}.png", np.where(gt[0] == 1, 1, 0).astype(np.uint8))
    write_mask(split / "Annotations" / name / f"{stems[appear]}.png", np.where(gt[appear] == 2, 2, 0).astype(np.uint8))
    meta = {
        "videos": {
            name: {
                "objects": {
                    "1": {"category": "thing", "frames": stems},
                    "2": {"category": "thing", "frames": stems[appear:]},
                }
            }
        }
    }
    write_json(split / "meta.json", meta)
    return split, gt


def iou(pred: np.ndarray, gt: np.ndarray, obj: int) -> float:
    a, b = pred == obj, gt == obj
    return float((a & b).sum() / max((a | b).sum(), 1))


@torch.no_grad()
def propagate_shared(encoder, frames: list[np.ndarray], first: np.ndarray, later: dict[int, np.ndarray], cfg: PropagationConfig) -> np.ndarray:
    """The earlier reading, for comparison: a frame where objects appear joins frame 0 in
    one globally attended reference (features and labels concatenated along the width),
    its cells competing with frame 0's in a single top-k; one propagation for all objects."""
    H, W = first.shape
    num = int(max(first.max(), *(m.max() for m in later.values())))
    feats = [encode(encoder, preprocess(f, None), "layer3") for f in frames]
    hw = tuple(feats[0].shape[-2:])

    def soft(labels: np.ndarray) -> torch.Tensor:
        return resize_labels(labels_to_onehot(labels, num), hw)

    labels = [soft(first)]
    reference = (feats[0], labels[0])
    cache = WindowCache()
    out = np.zeros((len(frames), H, W), np.uint8)
    out[0] = first
    for t in range(1, len(frames)):
        ctx = context_frames(t, cfg.context)
        pred = predict_windowed(feats[t], reference, [(feats[i], labels[i], m) for i, m in ctx], cfg, cache, [i for i, _ in ctx])
        if t in later:
            new = soft(later[t])
            new[0] = 0
            present = new.sum(0, keepdim=True)
            pred = (1 - present) * pred + present * new
            reference = (torch.cat([reference[0], feats[t]], -1), torch.cat([reference[1], pred], -1))
        labels.append(pred)
        out[t] = F.interpolate(pred[None], (H, W), mode="bilinear", align_corners=True)[0].argmax(0).numpy()
        if t in later:
            out[t][later[t] > 0] = later[t][later[t] > 0]
    return out


def run(root: Path, mode: str, cfg: PropagationConfig) -> np.ndarray:
    """(T, H, W) predictions for the video under ``root/valid``: ``mode`` "branch" is
    :func:`hvc.propagation.propagate_video`, "shared" :func:`propagate_shared`."""
    video = read_ytvos(root, "valid")[0]
    torch.manual_seed(0)
    enc = build_encoder_for_propagation(None)
    frames = video.read_frames()
    args = (lambda x, layer: enc(x, layer), frames, video.first_labels())
    if mode == "shared":
        return propagate_shared(*args, video.later_labels(), cfg)
    return propagate_video(*args, cfg, later_labels=video.later_labels())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--appear", type=int, default=3)
    ap.add_argument("--shift", type=int, default=4)
    ap.add_argument("--topk", type=int, default=15)
    ap.add_argument("--context", type=int, default=50)
    ap.add_argument("--radius", type=int, default=12)
    args = ap.parse_args()
    cfg = PropagationConfig(topk=args.topk, context=args.context, radius=args.radius)
    with tempfile.TemporaryDirectory() as tmp:
        _, gt = make_video(Path(tmp), args.frames, args.appear, args.shift)
        print(f"video {args.frames} frames 128x192, object 2 appears at frame {args.appear}; "
              f"top-k {args.topk}, context {args.context}, radius {args.radius}")  # fmt: skip
        for mode in ("branch", "shared"):
            pred = run(Path(tmp), mode, cfg)
            after = range(args.appear + 1, args.frames)
            iou1 = np.mean([iou(pred[t], gt[t], 1) for t in after])
            iou2 = np.mean([iou(pred[t], gt[t], 2) for t in after])
            pixels = [int((pred[t] == 2).sum()) for t in after]
            print(f"{mode}: IoU object 1 {iou1:.3f}, object 2 (new) {iou2:.3f}; "
                  f"object 2 pixels per frame {pixels} (ground truth {int((gt[-1] == 2).sum())})")  # fmt: skip


if __name__ == "__main__":
    main()
