"""Mask-VOS trained briefly on the DAVIS 2016 sample's train videos, scored on its 6 val
sequences against the same network at random initialisation, with both inference modes:
plain label propagation of the key features and the mask-embedded inference.

Usage: python benchmarks/maskvos_davis2016.py [--corr-steps 60] [--mask-steps 10]
       [--batch 8] [--mask-batch 2] [--size 64] [--scale 0.125] [--clusters 3]

Until the harness's loop knows the method, training runs the minimal loop of the plug-in
interface here (start_phase, make_optimizer, lr_at, loss, backward, step, after_step) on
clips cut from the sample's train sequences (every 4th frame of DAVIS 2016), one clip per
sequence per step drawn with a seeded generator. Scoring: J and F of the DAVIS definitions
(``hvc.eval.metrics.evaluate_sequence``; first and last frames not scored).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "davis2016-sample"


def _davis_readers():
    spec = importlib.util.spec_from_file_location("davis2016_compare", ROOT / "benchmarks" / "davis2016_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_train(sample: Path, short_side: int) -> list[torch.Tensor]:
    """The train sequences as (T, 3, H, W) uint8 tensors, short side resized to ``short_side``."""
    out = []
    for frames in _davis_readers().train_sequences(sample).values():
        imgs = []
        for path in frames:
            im = Image.open(path).convert("RGB")
            s = short_side / min(im.size)
            imgs.append(np.asarray(im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BILINEAR)))
        out.append(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous())
    return out


def clip_batch(method, videos: list[torch.Tensor], phase: int, batch: int, step: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch of the phase's clips: ``batch`` sequences drawn without replacement, a random
    start, frames every ``frame_gap`` stored frames, the phase's transform (seeded per sample)."""
    spec = method.data_spec(None, phase)
    g = torch.Generator().manual_seed(seed * 100003 + step)
    usable = [i for i, v in enumerate(videos) if v.shape[0] >= spec.span]
    picks = [usable[int(j)] for j in torch.randperm(len(usable), generator=g)[:batch]]
    samples = []
    for i in picks:
        start = int(torch.randint(videos[i].shape[0] - spec.span + 1, (1,), generator=g))
        torch.manual_seed(seed * 1_000_003 + step * 1009 + i)
        samples.append(spec.transform(videos[i][start : start + spec.span : spec.frame_gap])["frames"])
    return {"frames": torch.stack(samples), "video_id": torch.tensor(picks)}


def train(method, videos: list[torch.Tensor], steps: tuple[int, int], batches: tuple[int, int]) -> dict[str, float]:
    """The minimal loop over ``steps`` = (warm-up, mask) steps; returns seconds, samples and
    the last losses."""
    total = sum(steps)
    opt, last, samples, t0 = None, {}, 0, time.perf_counter()
    method.train()
    for step in range(total):
        phase = 0 if step < steps[0] else 1
        if opt is None or phase != method.phase:
            method.start_phase(phase)
            opt = method.make_optimizer(None)
        for group in opt.param_groups:
            group["lr"] = method.lr_at(step, total, 0.0)
        out = method.loss(clip_batch(method, videos, phase, batches[phase], step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step(step, total)
        samples += batches[phase]
        last = {k: float(v.detach()) for k, v in out.items()}
    return {"seconds": time.perf_counter() - t0, "samples": samples, **{f"last {k}": v for k, v in last.items()}}


def score(method, videos, mode: str) -> dict[str, float]:
    """J&F, J, F of ``mode`` ("plain": key-feature propagation with the method's preset;
    "mask": the mask-embedded inference, the paper's settings) over the val ``videos``."""
    from hvc.eval.metrics import evaluate_sequence
    from hvc.propagation import PropagationConfig, propagate_video
    from hvc.methods.maskvos.inference import propagate_video_maskvos
    from hvc.methods.maskvos.params import PRESET

    method.eval()
    modules = {"encoder": method.encoder_net, **method.inference_modules()}
    cfg = PropagationConfig(**{k: PRESET[k] for k in ("topk", "context", "radius", "temperature")})
    js, fs = [], []
    with torch.no_grad():
        for _, frames, masks in videos:
            if mode == "plain":
                pred = propagate_video(method.encoder_net, frames, masks[0], cfg, layer=PRESET["feature_layer"], dense=True)
            else:
                pred = propagate_video_maskvos(modules, frames, masks[0])
            per = evaluate_sequence(masks, pred)[1]
            js.append(float(np.mean(per["J"])))
            fs.append(float(np.mean(per["F"])))
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"JF": (j + f) / 2, "J": j, "F": f}


def run(sample: Path, corr_steps: int, mask_steps: int, batch: int, mask_batch: int, size: int, scale: float, clusters: int) -> dict:
    """Random-init scores, training, trained scores (seed 0). Returns the figures."""
    from hvc.methods.maskvos.method import MaskVOS
    from hvc.methods.maskvos.params import MaskVOSParams

    torch.manual_seed(0)
    config = MaskVOSParams(
        size=size, batch_corr=batch, batch_mask=mask_batch, clusters=clusters, corr_share=corr_steps / (corr_steps + mask_steps)
    )
    method = MaskVOS(config)
    videos = _davis_readers().val_sequences(sample, scale)
    random = {mode: score(method, videos, mode) for mode in ("plain", "mask")}
    stats = train(method, load_train(sample, round(size * 1.25)), (corr_steps, mask_steps), (batch, mask_batch))
    trained = {mode: score(method, videos, mode) for mode in ("plain", "mask")}
    return {"random": random, "trained": trained, **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--corr-steps", type=int, default=60)
    ap.add_argument("--mask-steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mask-batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--scale", type=float, default=0.125)
    ap.add_argument("--clusters", type=int, default=3)
    a = ap.parse_args()
    r = run(a.sample, a.corr_steps, a.mask_steps, a.batch, a.mask_batch, a.size, a.scale, a.clusters)
    print("| inference | J&F trained | J&F random init |")
    print("|---|---|---|")
    for mode in ("plain", "mask"):
        print(f"| {mode} | {100 * r['trained'][mode]['JF']:.1f} | {100 * r['random'][mode]['JF']:.1f} |")
    print(f"train time {r['seconds']:.0f} s, {r['samples']} clips, {r['samples'] / r['seconds']:.2f} clips/s; last losses:", {k: round(v, 3) for k, v in r.items() if k.startswith("last")})


if __name__ == "__main__":
    main()
