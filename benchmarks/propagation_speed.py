"""Label propagation: windowed vs dense-masked affinity, side by side in one run.

Both compute the prediction of one target frame from the first frame (global) and
``--context`` previous frames (local radius), on the same random L2-normalised features
of a real frame's feature-map size; the windowed path only matches each query against
the keys of its window, the dense path matches every context cell and masks afterwards
(the CRW/HVC code's computation). Prints ms per frame for each, the speed-up, the argmax
agreement and whether the soft labels are bit-identical.

    python benchmarks/propagation_speed.py                 # 480p DAVIS feature size: 60 x 107
    python benchmarks/propagation_speed.py --height 30 --width 54 --context 20
    python benchmarks/propagation_speed.py --davis ../shared/data/davis2016-sample --frames 6

``--davis ROOT`` propagates instead the first ``--frames`` frames of the first video of a
DAVIS 2016 folder at 480p with the random-initialisation encoder, both ways, and prints
ms per frame, the argmax agreement of the masks (and how many pixels differ) and both J&F (first and last frame not
scored, DAVIS definitions).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hvc.propagation import PropagationConfig, WindowCache, predict_dense, predict_windowed, propagate_video


def real_frames(root: Path, n: int, cfg: PropagationConfig) -> None:
    """Windowed vs dense propagation of the first ``n`` frames of a real DAVIS video."""
    from hvc.eval.readers import read_benchmark
    from hvc.io import read_mask
    from hvc.eval.metrics import evaluate_sequence, summarize
    from hvc.methods.hvc.model import build_encoder_for_propagation

    video = read_benchmark("davis2016", root)[0]
    frames = video.read_frames()[:n]
    gt = np.stack([read_mask(video.masks[i]) for i in range(n)])
    torch.manual_seed(0)
    enc = build_encoder_for_propagation(None)
    out = {}
    for name, dense in (("windowed", False), ("dense-masked", True)):
        tic = time.perf_counter()
        pred = propagate_video(lambda x, layer: enc(x, layer), frames, video.first_labels(), cfg, dense=dense)
        seconds = time.perf_counter() - tic
        jf = summarize({"o": evaluate_sequence(gt, pred)[1]})["JF_mean"]
        out[name] = (pred, seconds, jf)
        print(f"{name}: {1000 * seconds / (n - 1):.0f} ms/frame (features included), J&F {100 * jf:.2f}")
    differ = out["windowed"][0][1:] != out["dense-masked"][0][1:]
    print(f"{video.name}, frames 1-{n - 1} at {frames[0].shape[1]}x{frames[0].shape[0]}: argmax agreement "
          f"{100 * (1 - differ.mean()):.3f} % ({differ.sum()} of {differ.size} pixels differ), J&F difference "
          f"{100 * abs(out['windowed'][2] - out['dense-masked'][2]):.3f}, speed-up {out['dense-masked'][1] / out['windowed'][1]:.1f}x")  # fmt: skip


def compare_paths(
    device: torch.device, C: int, h: int, w: int, context: int, radius: int, topk: int = 15, frames: int = 3, objects: int = 3, segment: int = 8
) -> dict:
    """The windowed and dense predictions of ``frames`` target frames from the same random
    L2-normalised (C, h, w) features (seed 0): a reference frame and ``context`` previous
    frames, ``objects`` + 1 label channels. Returns ``windowed_ms`` and ``dense_ms`` (per
    frame; the windowed path's context keys laid out once beforehand, as a video does),
    ``agreement`` (argmax, fraction of cells) and ``identical`` (soft labels bit for bit)."""
    torch.manual_seed(0)

    def feats() -> torch.Tensor:
        return F.normalize(torch.randn(C, h, w, device=device), dim=0)

    def labels() -> torch.Tensor:
        return torch.softmax(torch.randn(objects + 1, h, w, device=device), 0)

    first = (feats(), labels())
    previous = [(feats(), labels(), 1) for _ in range(context)]
    queries = [feats() for _ in range(frames)]
    cfg = PropagationConfig(topk=topk, context=context, radius=radius, segment=segment)
    dense_cfg = PropagationConfig(topk=topk, context=context, radius=radius, query_chunk=1024)
    cache, ids = WindowCache(), list(range(1, context + 1))
    predict_windowed(queries[0], first, previous, cfg, cache, ids)  # lays out the context keys once
    out = {}
    for name, fn in (
        ("windowed", lambda q: predict_windowed(q, first, previous, cfg, cache, ids)),
        ("dense", lambda q: predict_dense(q, first, previous, dense_cfg)),
    ):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        preds = [fn(q) for q in queries]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out[name] = (1000 * (time.perf_counter() - tic) / frames, preds)
    pairs = list(zip(out["windowed"][1], out["dense"][1]))
    return {
        "windowed_ms": out["windowed"][0],
        "dense_ms": out["dense"][0],
        "agreement": sum((a.argmax(0) == b.argmax(0)).float().mean().item() for a, b in pairs) / frames,
        "identical": all(torch.equal(a, b) for a, b in pairs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=60, help="feature rows (480 / 8)")
    ap.add_argument("--width", type=int, default=107, help="feature columns (854 / 8)")
    ap.add_argument("--channels", type=int, default=256, help="layer3 channels")
    ap.add_argument("--context", type=int, default=20, help="previous frames (official: 50)")
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--radius", type=int, default=12)
    ap.add_argument("--topk", type=int, default=15)
    ap.add_argument("--segment", type=int, default=8, help="query columns per matrix product of the windowed path")
    ap.add_argument("--frames", type=int, default=3, help="target frames timed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, i.e. OMP_NUM_THREADS or every core)")
    ap.add_argument("--davis", type=Path, default=None, help="DAVIS 2016 folder: real frames at 480p instead of random features")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.davis is not None:
        real_frames(args.davis, args.frames, PropagationConfig(topk=args.topk, context=args.context, radius=args.radius, segment=args.segment))
        return
    r = compare_paths(torch.device(args.device), args.channels, args.height, args.width, args.context, args.radius,
                      args.topk, args.frames, args.objects, args.segment)  # fmt: skip
    print(f"device {args.device} ({torch.get_num_threads()} CPU threads), features {args.channels}x{args.height}x{args.width}, "
          f"first frame + {args.context} previous, radius {args.radius}, top-k {args.topk}")  # fmt: skip
    print(f"windowed: {r['windowed_ms']:.1f} ms/frame   dense-masked: {r['dense_ms']:.1f} ms/frame   "
          f"speed-up {r['dense_ms'] / r['windowed_ms']:.1f}x   argmax agreement {100 * r['agreement']:.2f}%, "
          f"soft labels bit-identical: {r['identical']}")  # fmt: skip

if __name__ == "__main__":
    main()
