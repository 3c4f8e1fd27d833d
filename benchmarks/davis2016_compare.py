"""HVC (frames as images) against LIIR (frame pairs of videos) on the DAVIS 2016 sample at
an equal budget: the same training frames, the same number of training samples, scored by
the same metrics on the sample's 6 val sequences (J&F, DAVIS definitions).

Training data: the sample's 30 train sequences (every 4th frame, so LIIR's frame gaps 2, 5, 8
become 1, 1, 2 stored frames: ``liir.frame_gaps [1, 2]`` with p (0.8, 0.2)). Both methods
run through the harness's training loop (``hvc.train.train``) on the CPU and are propagated
at a reduced resolution (``--scale``; 1/4 of 480p by default, to fit a small CPU); HVC with
the propagation defaults, LIIR both with its own inference (:mod:`hvc.methods.liir.inference`,
window radius scaled to the frames) and with the generic propagation.

    PYTHONPATH=$PWD python benchmarks/davis2016_compare.py --samples 960 --out /tmp/cmp

Prints one Markdown table row per method and propagation path (trained and at random
initialisation); a row where nothing of the foreground survives says so instead of 0.0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "davis2016-sample"


def train_sequences(sample: Path) -> dict[str, list[Path]]:
    """Train sequence name → its frames (every 4th frame of DAVIS 2016), from train_frames.txt."""
    out: dict[str, list[Path]] = {}
    for line in (sample / "ImageSets" / "480p" / "train_frames.txt").read_text().split():
        out.setdefault(line.split("/")[3], []).append(sample / line.lstrip("/"))
    return {k: sorted(v) for k, v in sorted(out.items())}


def val_sequences(sample: Path, scale: float) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    """(name, frames (H, W, 3) uint8, masks (T, H, W) 0/1) of the val sequences (the
    harness's DAVIS 2016 reader, in val.txt order), resized by ``scale``."""
    from hvc.eval.readers import read_benchmark
    from hvc.io import read_mask

    out = []
    for video in read_benchmark("davis2016", sample):
        frames = video.read_frames()
        size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
        small = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames]
        masks = [np.asarray(Image.fromarray(read_mask(video.masks[i])).resize(size, Image.NEAREST)) for i in range(len(frames))]
        out.append((video.name, small, np.stack(masks)))
    return out


def shards(method: str, sample: Path, out: Path) -> Path:
    """The train sequences as video shards (LIIR) or their frames as image shards (HVC)."""
    from hvc.data.shards import write_shards, write_video_shards

    seqs = train_sequences(sample)
    if method == "liir":
        write_video_shards(list(seqs.items()), out, "davis2016-train", max_count=8)
    else:
        write_shards([f for frames in seqs.values() for f in frames], sample, out, "davis2016-train", max_count=200)
    return out


def params(method: str, samples: int, batch: int, size: int):
    """The harness's parameters of one method for ``samples`` training samples."""
    from hvc.config.params import Params

    p = Params()
    steps = -(-samples // batch)
    train = p.train.model_copy(update=dict(batch_size=batch, max_steps=steps, workers=0, crop_size=size, checkpoint_every=10**6, log_every=10))
    return p.model_copy(
        update={
            "method": method,
            "device": "cpu",
            "train": train,
            "liir": p.liir.model_copy(update={"frame_gaps": [1, 2], "frame_gap_probs": [0.8, 0.2], "bank_frames": 64}),
        }
    )


def score(encode, method: str, videos, path: str = "generic") -> dict[str, float]:
    """J&F mean, J mean, F mean over the val sequences (first and last frames not scored),
    propagated by LIIR's own inference (``path="own"``) or the generic label propagation;
    ``degenerate`` is True when no scored frame of any sequence holds a foreground pixel
    (e.g. a random LIIR encoder under raw dot products: flat affinities, every cell gets
    about the frame's average label), a collapse rather than a score."""
    from hvc.methods.liir.inference import propagate_video_liir
    from hvc.eval.metrics import evaluate_sequence
    from hvc.propagation import PropagationConfig, propagate_video

    js, fs, foreground = [], [], 0
    for _, frames, masks in videos:
        if path == "own":
            pred = propagate_video_liir(encode, frames, masks[0])
        else:
            cfg = PropagationConfig(temperature=0.1, topk=15, context=20, radius=12)
            pred = propagate_video(encode, frames, masks[0], cfg, dense=True)  # small maps: the dense path
        foreground += int((pred[1:-1] > 0).sum())
        per = evaluate_sequence(masks, pred)[1]
        js.append(float(np.mean(per["J"])))
        fs.append(float(np.mean(per["F"])))
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"JF": (j + f) / 2, "J": j, "F": f, "degenerate": foreground == 0}


def encoder_of(method: str, model: Path | None):
    """The method's frozen encoder from the ``encoder.pt`` in ``model`` (the harness's
    loader), or at random initialisation (None; seed 0), fed ImageNet-normalised RGB as
    label propagation gives it."""
    from hvc.eval.encoders import load_encoder

    if model is not None:
        return load_encoder(str(model / "encoder.pt"))
    return load_encoder("random", seed=0, method=method)


def run(method: str, samples: int, batch: int, size: int, out: Path, videos, sample: Path = SAMPLE) -> dict:
    """Train ``method`` for ``samples`` samples, score it and its random initialisation."""
    from hvc.train import train

    shard_dir = shards(method, sample, out / f"shards-{method}")
    summary = train(params(method, samples, batch, size), shard_dir, out / f"model-{method}", progress=False)
    tic = time.perf_counter()
    trained, random = encoder_of(method, out / f"model-{method}"), encoder_of(method, None)
    paths = ["own", "generic"] if method == "liir" else ["generic"]
    return {
        "method": method,
        "trained": {path: score(trained, method, videos, path) for path in paths},
        "random": {path: score(random, method, videos, path) for path in paths},
        "train_seconds": summary["train_seconds"],
        "images_per_s": summary["images_per_s"],
        "peak_host_memory_gb": summary["peak_host_memory_gb"],
        "steps": summary["steps"],
        "samples": summary["steps"] * batch,
        "score_seconds": time.perf_counter() - tic,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=960, help="training samples per method (equal budget)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="training crop (HVC) / pair (LIIR) side, pixels")
    ap.add_argument("--scale", type=float, default=0.25, help="val frames resized by this factor")
    ap.add_argument("--methods", nargs="+", default=["hvc", "liir"])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    videos = val_sequences(SAMPLE, a.scale)
    rows = [run(m, a.samples, a.batch, a.size, a.out, videos) for m in a.methods]
    (a.out / "compare.json").write_text(json.dumps(rows, indent=2))
    print("| method | propagation | J&F trained | J&F random init | train time (s) | images/s | peak host memory (GB) | steps | samples |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for path in r["trained"]:
            cells = [jf_cell(r[k][path]) for k in ("trained", "random")]
            print(
                f"| {r['method'].upper()} | {path} | {cells[0]} | {cells[1]} | {r['train_seconds']:.0f} | "
                f"{r['images_per_s']:.2f} | {r['peak_host_memory_gb']:.2f} | {r['steps']} | {r['samples']} |"
            )


def jf_cell(result: dict) -> str:
    """A table cell: J&F × 100, or what a degenerate row is instead of its 0.0."""
    if result.get("degenerate"):
        return "degenerate (no foreground predicted)"
    return f"{100 * result['JF']:.1f}"

if __name__ == "__main__":
    main()
