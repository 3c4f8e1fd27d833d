"""LIIR's own inference against the generic label propagation, with the same LIIR encoder.

Propagates the first ``--frames`` frames of the first video of a DAVIS 2016 folder,
resized by ``--scale`` (0.5: 240 × 427), with a random-initialisation LIIR encoder (seed
0), through :func:`hvc.methods.liir.inference.propagate_video_liir` (references 0, 5, t-5,
t-3, t-1, window radius scaled to the frames) and :func:`hvc.propagation.propagate_video`
(the generic windowed path, :class:`~hvc.propagation.PropagationConfig` defaults but
``--context``), and prints ms per propagated frame of each, the encoder's share, and the
window radius used.

    python benchmarks/liir_inference_speed.py --davis ../shared/data/davis2016-sample --frames 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hvc.eval.encoders import Renormalized
from hvc.methods.liir.inference import LIIRInference, propagate_video_liir
from hvc.propagation import PropagationConfig, propagate_video
from hvc.methods.liir.method import LIIR


def video(root: Path, scale: float, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``count`` frames (H, W, 3) uint8 and the first mask of the first DAVIS 2016
    val video, resized by ``scale``."""
    from hvc.eval.readers import read_benchmark
    from hvc.io import read_mask

    v = read_benchmark("davis2016", root)[0]
    frames = v.read_frames()[:count]
    size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
    small = [np.array(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames]
    return small, np.array(Image.fromarray(read_mask(v.masks[0])).resize(size, Image.NEAREST))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--davis", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-sample")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--context", type=int, default=20, help="previous frames of the generic path")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    frames, first = video(a.davis, a.scale, a.frames)
    torch.manual_seed(0)
    spec = LIIR().encoder_spec()
    encoder = Renormalized(LIIR.load_encoder(None, spec), spec).eval()
    x = torch.zeros(1, 3, *frames[0].shape[:2])
    with torch.no_grad():
        tic = time.perf_counter()
        for _ in range(3):
            encoder(x, "layer3")
        enc_ms = (time.perf_counter() - tic) / 3 * 1000
    n = len(frames) - 1
    tic = time.perf_counter()
    propagate_video_liir(encoder, frames, first)
    own_ms = (time.perf_counter() - tic) / n * 1000
    tic = time.perf_counter()
    propagate_video(encoder, frames, first, PropagationConfig(context=a.context))
    generic_ms = (time.perf_counter() - tic) / n * 1000
    h, w = frames[0].shape[:2]
    print(f"{n} frames of {h} x {w}, LIIR window radius {LIIRInference().radius_at(h, w)} cells, {a.threads} threads")
    print(f"encoder alone: {enc_ms:.0f} ms/frame")
    print(f"LIIR's own inference: {own_ms:.0f} ms/frame")
    print(f"generic propagation (context {a.context}, radius {PropagationConfig().radius}): {generic_ms:.0f} ms/frame")


if __name__ == "__main__":
    main()
