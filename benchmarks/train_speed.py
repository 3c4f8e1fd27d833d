"""Training throughput: images/s, step time and peak memory of HVC training steps.

Runs the real training step (hvc.train.train_step: both encoders, the hybrid loss,
Adam, the EMA update) on synthetic two-view batches, on the CPU and, when one exists,
on the GPU with the GPU path's settings (bf16 autocast, channels_last, fused Adam,
optional torch.compile). Prints one line per device.

    python benchmarks/train_speed.py                      # paper setting: batch 128, 256x256
    python benchmarks/train_speed.py --cpu-batch 8 --cpu-size 64 --steps 5
    python benchmarks/train_speed.py --stage params.yaml   # the training stage vs its pure step

``--stage PARAMS`` compares, on the CPU, the whole training stage (:func:`hvc.train.train`
on the demo's shards with the settings of PARAMS: loader workers, decoding, cropping,
logging, checkpoints) with the pure step of the same model at the same batch and crop
size, measured alternately (step, stage, step, stage, ...) so that the load of a shared
machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from hvc.config.params import load_params
from hvc.train import build_model, train_step

ROOT = Path(__file__).resolve().parents[1]


def synthetic_batch(batch: int, size: int, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """An HVC two-view batch of random images: views (B, 3, size, size), crop boxes (B, 4)
    (x0, y0, x1, y1 in [0, 1]) that overlap as the data pipeline's do."""
    v1, v2 = (torch.randn(batch, 3, size, size, device=device) for _ in range(2))
    if channels_last:
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    lo = torch.rand(batch, 2, device=device) * 0.4
    box1 = torch.cat([lo, lo + 0.6], 1)
    box2 = torch.cat([lo + 0.1, lo + 0.6 + 0.1 * torch.rand(batch, 2, device=device)], 1).clamp(max=1)
    return {"view1": v1, "view2": v2, "box1": box1, "box2": box2}


def measure(device: torch.device, batch: int, size: int, steps: int, warmup: int, bf16: bool, compile_: bool = False) -> dict:
    """images/s, seconds per step and peak GPU memory (None on the CPU) of the real training
    step (:func:`hvc.train.train_step`) of the HVC model of ``params.yaml`` (the paper's
    model: ``configs/paper.yaml`` changes data and schedule only) on a synthetic batch; on
    a GPU with channels_last and fused Adam."""
    gpu = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(load_params(ROOT / "params.yaml")).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3, fused=gpu)
    forward = torch.compile(model) if compile_ else model
    data = synthetic_batch(batch, size, device, gpu)
    total = warmup + steps
    for k in range(warmup):  # kernels, allocator
        train_step(model, forward, opt, data, k, total, bf16=bf16)
    if gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    for k in range(warmup, total):
        train_step(model, forward, opt, data, k, total, bf16=bf16)
    if gpu:
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - tic) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None
    del model, opt, data, forward
    if gpu:
        torch.cuda.empty_cache()
    return {
        "device": torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "batch": batch,
        "size": size,
        "step_s": dt,
        "images_per_s": batch / dt,
        "peak_gb": peak,
    }


def _cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished children (loader workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def stage_vs_step(params_file: Path, steps: int, rounds: int) -> None:
    """Print the training stage's images/s next to its pure step's, ``rounds`` times."""
    from hvc.data.demo import build_demo
    from hvc.config.params import load_params, parse_overrides
    from hvc.data.shards import list_training_images, write_shards
    from hvc import train as hvc_train
    from hvc.train import train

    p = load_params(params_file, parse_overrides([f"train.max_steps={steps}", "device=cpu"]))
    t = p.train
    with tempfile.TemporaryDirectory() as tmp:
        data, shards = Path(tmp) / "data", Path(tmp) / "shards"
        build_demo(p.demo, data)
        images = list_training_images(data, p.data.train_set, p.shards.step)
        write_shards(images, data, shards, "demo-train", p.shards.max_size_mb, p.shards.max_count, p.shards.on_bad_image)
        print(f"CPU, {torch.get_num_threads()} threads; batch {t.batch_size} at {t.crop_size}x{t.crop_size}, "
              f"{t.workers} loader worker(s), {steps} steps per measurement")  # fmt: skip
        for r in range(rounds):
            torch.manual_seed(0)
            model = build_model(p)
            opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=t.lr)
            data_ = synthetic_batch(t.batch_size, t.crop_size, torch.device("cpu"), False)
            train_step(model, model, opt, data_, 0, steps + 1)
            tic, cpu = time.perf_counter(), _cpu_seconds()
            for k in range(1, steps + 1):
                train_step(model, model, opt, data_, k, steps + 1)
            pure = steps * t.batch_size / (time.perf_counter() - tic)
            pure_cpu = (_cpu_seconds() - cpu) / (steps * t.batch_size)
            inside = [0.0]

            def timed_step(*a, **kw):  # the stage's own steps, timed where they run
                t0 = time.perf_counter()
                result = train_step(*a, **kw)
                inside[0] += time.perf_counter() - t0
                return result

            hvc_train.train_step = timed_step
            try:
                tic, cpu = time.perf_counter(), _cpu_seconds()
                summary = train(p, shards, Path(tmp) / f"model{r}", progress=False)
                wall = time.perf_counter() - tic
                stage_cpu = (_cpu_seconds() - cpu) / (steps * t.batch_size)
            finally:
                hvc_train.train_step = train_step
            stage = summary["images_per_s"]
            print(f"round {r + 1}: pure step {pure:.2f} images/s; training stage {stage:.2f} images/s "
                  f"({100 * stage / pure:.0f} % of the step; {steps * t.batch_size / wall:.2f} images/s counting "
                  f"model set-up and output, {wall:.1f} s); inside the step: {100 * inside[0] / summary['train_seconds']:.1f} % "
                  f"of the stage's loop time (the rest: waiting for data, logging, checkpoints); CPU time per image "
                  f"(all threads, loader workers included): step {pure_cpu:.3f} s, stage {stage_cpu:.3f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128, help="GPU batch (paper: 128)")
    ap.add_argument("--size", type=int, default=256, help="GPU crop size (paper: 256)")
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--cpu-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile on the GPU")
    ap.add_argument("--stage", type=Path, default=None, help="params file: compare the training stage with its pure step")
    ap.add_argument("--stage-steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.stage is not None:
        stage_vs_step(args.stage, args.stage_steps, args.rounds)
        return
    runs = [(torch.device("cpu"), args.cpu_batch, args.cpu_size, False)]
    if torch.cuda.is_available():
        runs.append((torch.device("cuda"), args.batch, args.size, args.compile))
    else:
        print("no GPU found: CPU figures only")
    for device, batch, size, comp in runs:
        r = measure(device, batch, size, args.steps, args.warmup, bf16=device.type == "cuda", compile_=comp)
        peak = f"{r['peak_gb']:.2f} GB peak" if r["peak_gb"] is not None else "peak memory n/a (CPU)"
        print(f"{r['device']}: batch {batch} at {size}x{size}: {r['step_s']:.3f} s/step, {r['images_per_s']:.1f} images/s, {peak}")


if __name__ == "__main__":
    main()
