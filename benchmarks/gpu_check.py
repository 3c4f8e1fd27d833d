"""One GPU check: every GPU figure the results lack, in one run of at most 8 minutes.

Run as is on a machine with a GPU::

    python benchmarks/gpu_check.py            # about 2-4 minutes on one H100/H200-class GPU
    python benchmarks/gpu_check.py --quick    # tiny sizes on the CPU, seconds (CI: the script does not rot)

Prints, for the device found (the first GPU, else the CPU):

1. Training (paper setting: batch 128, 256x256 crops; the model of ``configs/paper.yaml``):
   images/s and peak memory, fp32 and bf16 autocast (channels_last, fused Adam on a GPU).
   Target on an H100-class GPU: >= 1,000 images/s in bf16 and <= 12 GB.
2. Label propagation at the official settings (480p DAVIS feature map 256 x 60 x 107,
   reference frame + 50 previous frames, radius 12, top-k 15): ms per frame, windowed
   (:func:`hvc.propagation.predict_windowed`) vs dense-masked
   (:func:`hvc.propagation.predict_dense`), their speed-up and argmax agreement, and the
   encoder's feature extraction per 480p frame.
3. An estimate of the DAVIS 2017 val propagation time: 30 videos, 1,999 frames (the
   official file list ``val_davis2017_val.txt``), 1,969 of them propagated (frame 0 of
   each video is the given mask), at windowed + feature time per frame; an upper bound,
   since frames early in a video have fewer distinct context frames.

A section that would start after ``--budget`` seconds (default 420, so that the whole
check stays under 8 minutes) is skipped with a line that says so.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from hvc.methods.hvc.model import build_encoder_for_propagation
from propagation_speed import compare_paths  # benchmarks/, beside this script
from train_speed import measure

DAVIS17_VAL_VIDEOS, DAVIS17_VAL_FRAMES = 30, 1999


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def features(device: torch.device, H: int, W: int, frames: int) -> float:
    """ms per frame of the encoder's layer3 features at H x W (fp32)."""
    enc = build_encoder_for_propagation(None).to(device).eval()
    x = torch.randn(1, 3, H, W, device=device)
    with torch.no_grad():
        enc(x, "layer3")
        _sync(device)
        tic = time.perf_counter()
        for _ in range(frames):
            enc(x, "layer3")
        _sync(device)
    return 1000 * (time.perf_counter() - tic) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per precision")
    ap.add_argument("--budget", type=float, default=420, help="seconds after which no section starts")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.quick:
        torch.set_num_threads(1)
        batch, size, steps, warmup = 2, 32, 1, 0
        C, h, w, context, radius, frames, H, W = 16, 8, 12, 3, 4, 1, 64, 96
    else:
        batch, size, steps, warmup = 128, 256, args.steps, 2
        C, h, w, context, radius, frames, H, W = 256, 60, 107, 50, 12, 3, 480, 854
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}" + ("; --quick: tiny sizes, not a measurement" if args.quick else ""))
    if device.type != "cuda" and not args.quick:
        print("no GPU found: the figures below are CPU figures")
    t0 = time.perf_counter()

    def time_left(section: str) -> bool:
        if time.perf_counter() - t0 < args.budget:
            return True
        print(f"{section}: skipped, the check has run {time.perf_counter() - t0:.0f} s (--budget {args.budget:.0f})")
        return False

    for precision in ("fp32", "bf16"):
        if time_left(f"training {precision}"):
            r = measure(device, batch, size, steps, warmup, bf16=precision == "bf16")
            mem = f"{r['peak_gb']:.2f} GB peak" if r["peak_gb"] is not None else "peak memory n/a (CPU)"
            print(f"training {precision}: batch {batch} at {size}x{size}: {r['images_per_s']:.1f} images/s, {mem}")
    if time_left("propagation"):
        r = compare_paths(device, C, h, w, context, radius, frames=frames)
        print(f"propagation {C}x{h}x{w}, reference + {context} previous frames, radius {radius}, top-k 15: "
              f"windowed {r['windowed_ms']:.1f} ms/frame, dense-masked {r['dense_ms']:.1f} ms/frame, "
              f"speed-up {r['dense_ms'] / r['windowed_ms']:.1f}x, argmax agreement {100 * r['agreement']:.2f} %, "
              f"soft labels bit-identical: {r['identical']}")  # fmt: skip
        if time_left("features"):
            _davis17_estimate(r, features(device, H, W, frames), H, W, args.quick)
    print(f"check done in {time.perf_counter() - t0:.0f} s")


def _davis17_estimate(r: dict, feat_ms: float, H: int, W: int, quick: bool) -> None:
    """Print the feature time and the DAVIS 2017 val estimate from the per-frame times."""
    print(f"features {H}x{W} (layer3, fp32): {feat_ms:.1f} ms/frame")
    propagated = DAVIS17_VAL_FRAMES - DAVIS17_VAL_VIDEOS
    total_s = (propagated * (r["windowed_ms"] + feat_ms) + DAVIS17_VAL_VIDEOS * feat_ms) / 1000
    dense_s = (propagated * (r["dense_ms"] + feat_ms) + DAVIS17_VAL_VIDEOS * feat_ms) / 1000
    print(f"DAVIS 2017 val estimate ({DAVIS17_VAL_VIDEOS} videos, {DAVIS17_VAL_FRAMES} frames, {propagated} propagated): "
          f"{total_s / 60:.1f} min windowed, {dense_s / 60:.1f} min dense-masked"
          + (" (at the --quick sizes: meaningless)" if quick else ""))  # fmt: skip


if __name__ == "__main__":
    main()
