"""Training throughput: images/s, step time and peak memory of HVC training steps.

Runs the real training step (hvc.train.train_step: both encoders, the hybrid loss,
Adam, the EMA update) on synthetic two-view batches, on the CPU and, when one exists,
on the GPU with the GPU path's settings (bf16 autocast, channels_last, fused Adam,
optional torch.compile). Prints one line per device.

    python benchmarks/train_speed.py                      # paper setting: batch 128, 256x256
    python benchmarks/train_speed.py --cpu-batch 8 --cpu-size 64 --steps 5
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from hvc.model import HVC
from hvc.train import train_step


def synthetic_batch(batch: int, size: int, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, ...]:
    v1, v2 = (torch.randn(batch, 3, size, size, device=device) for _ in range(2))
    if channels_last:
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    lo = torch.rand(batch, 2, device=device) * 0.4
    box1 = torch.cat([lo, lo + 0.6], 1)
    box2 = torch.cat([lo + 0.1, lo + 0.6 + 0.1 * torch.rand(batch, 2, device=device)], 1).clamp(max=1)
    return v1, v2, box1, box2


def measure(device: torch.device, batch: int, size: int, steps: int, warmup: int, compile_: bool) -> dict:
    gpu = device.type == "cuda"
    torch.manual_seed(0)
    model = HVC().to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3, fused=gpu)
    forward = torch.compile(model) if compile_ else model
    data = synthetic_batch(batch, size, device, gpu)
    total = warmup + steps
    for k in range(warmup):
        train_step(model, forward, opt, data, k, total, 0.99, bf16=gpu)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    for k in range(warmup, total):
        train_step(model, forward, opt, data, k, total, 0.99, bf16=gpu)
    if gpu:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - tic) / steps
    return {
        "device": torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "batch": batch,
        "size": size,
        "step_s": dt,
        "images_per_s": batch / dt,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128, help="GPU batch (paper: 128)")
    ap.add_argument("--size", type=int, default=256, help="GPU crop size (paper: 256)")
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--cpu-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile on the GPU")
    args = ap.parse_args()
    runs = [(torch.device("cpu"), args.cpu_batch, args.cpu_size, False)]
    if torch.cuda.is_available():
        runs.append((torch.device("cuda"), args.batch, args.size, args.compile))
    else:
        print("no GPU found: CPU figures only")
    for device, batch, size, comp in runs:
        r = measure(device, batch, size, args.steps, args.warmup, comp)
        peak = f"{r['peak_gb']:.2f} GB peak" if r["peak_gb"] is not None else "peak memory n/a (CPU)"
        print(f"{r['device']}: batch {batch} at {size}x{size}: {r['step_s']:.3f} s/step, {r['images_per_s']:.1f} images/s, {peak}")


if __name__ == "__main__":
    main()
