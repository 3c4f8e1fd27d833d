"""HVC training loop (paper §3.3, Algorithm 1): resumable, single- or multi-GPU.

Run as ``hvc train`` (one process) or ``torchrun --nproc_per_node N -m hvc.cli train``
(DistributedDataParallel, the global batch split across ranks, SyncBatchNorm by default).

Resumable: a checkpoint (weights, optimizer, step, epoch, RNG states) is written
atomically every ``train.checkpoint_every`` steps and on SIGTERM into ``<out>.work/``;
starting the same stage again continues from it. The data stream depends only on
(seed, epoch), so on the CPU with deterministic settings a resumed run ends with the
same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hvc.device import convert_sync_batchnorm, init_distributed, pick_device
from hvc.io import DataError, atomic_dir, atomic_path, write_json
from hvc.methods.hvc.model import HVC, momentum_at
from hvc.config.params import Params, ParamsError
from hvc.config.ids import content_id, train_config
from hvc.data.shards import TrainStream, verify_shards
from hvc.methods.hvc.views import TwoViews
from hvc.config.code import provenance
from hvc.config.ids import method_name
from hvc.device import device_label

log = logging.getLogger(__name__)


def build_model(p: Params) -> HVC:
    """The HVC model of the train section's settings (Tables 6, 7c, 7d, 7f)."""
    t = p.train
    return HVC(
        proj_dim=t.proj_dim,
        head=t.head,
        radius=t.radius,
        radius_unit=t.radius_unit,
        alpha=t.alpha,
        static=t.static,
        dynamic=t.dynamic,
    )


def train_step(
    model: HVC,
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, ...],
    step: int,
    total_steps: int,
    base_momentum: float,
    bf16: bool = False,
) -> tuple[dict[str, torch.Tensor], float]:
    """One iteration of Algorithm 1: loss, backward, Adam step, then the EMA update.

    Args:
        model: the HVC module (for the EMA update).
        forward: what computes the loss: ``model``, its DDP wrapper or its compiled form.
        batch: (v1, v2, box1, box2) on the model's device.
        step: index k of this step (0-based) for the momentum schedule over ``total_steps``.
    Returns:
        (loss dict, momentum m used for the EMA update).
    """
    v1, v2, b1, b2 = batch
    device_type = v1.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        losses = forward(v1, v2, b1, b2)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    m = momentum_at(step, total_steps, base_momentum)
    model.update_target(m)
    return losses, m


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class NonFiniteLoss(ParamsError):
    """The training loss became NaN or infinite: the run diverged (a learning rate too
    high, or bad data); raised before the step's weights are saved."""


class _StopFlag:
    """Turns SIGTERM into a flag checked after each step (checkpoint, then exit 143)."""

    def __init__(self) -> None:
        self.stop = False
        self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.stop = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._old)


def train(p: Params, shard_dir: Path, out_dir: Path, progress: bool = True, verify: str = "sha256") -> dict:
    """Train HVC on the shards and write ``out_dir`` atomically.

    Args:
        p: validated parameters (seed, device, train section).
        shard_dir: folder with ``index.json`` and the tar shards.
        verify: ``"sha256"`` checks every shard's size and SHA-256 against index.json
            once per run (:func:`hvc.data.shards.verify_shards`); ``"size"`` only the sizes.
        out_dir: output folder; receives ``checkpoint.pt`` (full state), ``encoder.pt``
            (online backbone state dict, for propagation), ``train.json`` (steps, wall
            time, images/s, peak GPU memory: Table 8) and ``dvclive/`` logs.
    Returns:
        the summary written to ``train.json``.
    Raises:
        ValueError: the global batch is not divisible by the number of processes.
        DataError: a shard differs from index.json (size, checksum), or an epoch yields
            fewer batches than index.json's sample counts promise (a shard lost samples).
        NonFiniteLoss: the loss is NaN or infinite (nothing of that step is saved).
        SystemExit(143): on SIGTERM, after saving a checkpoint.
    """
    t = p.train
    device = pick_device(p.device, int(os.environ.get("LOCAL_RANK", "0")))
    d = init_distributed(device)
    if t.batch_size % d.world_size:
        raise ValueError(f"train.batch_size = {t.batch_size} is not divisible by the {d.world_size} processes")
    local_batch = t.batch_size // d.world_size
    work = out_dir.with_name(f".{out_dir.name}.work")
    ckpt_path = work / "checkpoint.pt"
    config_id = content_id(train_config(p))

    torch.manual_seed(p.seed)
    random.seed(p.seed)
    np.random.seed(p.seed)
    model = build_model(p).to(device)
    if d.world_size > 1 and t.sync_bn:
        model = convert_sync_batchnorm(model, device)
    if device.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=t.lr, weight_decay=t.weight_decay, fused=device.type == "cuda")
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")

    views = TwoViews(t.crop_size, t.scale, t.ratio, t.augment, t.normalization)
    verify_shards(shard_dir, full=verify == "sha256", rank=d.rank, world_size=d.world_size)
    stream = TrainStream(shard_dir, views, local_batch, p.seed, d.rank, d.world_size, t.workers)
    steps_per_epoch = len(stream)
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=t.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if t.workers else None,
    )

    step, elapsed, last_loss = 0, 0.0, None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state.get("config_id") != config_id:
            log.warning("%s belongs to another configuration; starting over", ckpt_path)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, elapsed = state["step"], state["elapsed"]
            _set_rng_state(state["rng"])
            log.info("resuming from %s at step %d/%d", ckpt_path, step, total_steps)

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.world_size > 1 else model
    forward = torch.compile(net) if t.compile else net

    def save_checkpoint() -> None:
        if not d.main:
            return
        state = {
            "config_id": config_id,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "rng": _rng_state(),
            "params": p.model_dump(),
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    live = None
    if d.main:
        from dvclive import Live

        work.mkdir(parents=True, exist_ok=True)
        live = Live(str(work / "dvclive"), resume=step > 0, dvcyaml=None, save_dvc_exp=False, report=None)
    stop = _StopFlag()
    bar = None
    if d.main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model.train()
    t_window, n_window = time.perf_counter(), 0
    try:
        while step < total_steps:
            if stop.stop:  # SIGTERM between epochs (or while the loader yielded nothing)
                save_checkpoint()
                raise SystemExit(143)
            epoch, in_epoch = divmod(step, steps_per_epoch)
            stream.set_epoch(epoch, skip_batches=in_epoch)
            tic = time.perf_counter()
            for v1, v2, b1, b2 in loader:
                v1, v2 = (v.to(device, non_blocking=True) for v in (v1, v2))
                b1, b2 = (b.to(device, non_blocking=True) for b in (b1, b2))
                if device.type == "cuda" and t.channels_last:
                    v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
                losses, m = train_step(model, forward, optimizer, (v1, v2, b1, b2), step, total_steps, t.momentum, bf16)
                last_loss = float(losses["loss"].detach())
                if not math.isfinite(last_loss):
                    raise NonFiniteLoss(
                        f"train: the loss is {last_loss} at step {step + 1} (train.lr = {t.lr}): training diverged; "
                        "lower train.lr or check the training images (nothing of this run after the last checkpoint is kept)"
                    )
                step += 1
                now = time.perf_counter()
                elapsed += now - tic  # wall time per step, waiting for data included
                tic = now
                n_window += v1.shape[0] * d.world_size
                if live is not None and (step % t.log_every == 0 or step == total_steps):
                    now = time.perf_counter()
                    ips = n_window / max(now - t_window, 1e-9)
                    t_window, n_window = now, 0
                    for k in ("loss", "static", "dynamic"):
                        live.log_metric(f"train/{k}", float(losses[k].detach()))
                    live.log_metric("train/momentum", m)
                    live.log_metric("train/lr", optimizer.param_groups[0]["lr"])
                    live.log_metric("train/images_per_s", ips)
                    live.next_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                if step % t.checkpoint_every == 0 or stop.stop:
                    save_checkpoint()
                if stop.stop:
                    raise SystemExit(143)
                if step >= total_steps:
                    break
            if step < min(total_steps, (epoch + 1) * steps_per_epoch):
                raise DataError(
                    shard_dir,
                    f"epoch {epoch} ended after {step - epoch * steps_per_epoch} of the {steps_per_epoch} batches that "
                    "index.json's sample counts promise: a shard holds fewer readable samples than listed; rebuild the shards",
                )
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
    save_checkpoint()

    summary = {
        "steps": step,
        "epochs": step / steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "global_batch": t.batch_size,
        "world_size": d.world_size,
        "train_seconds": elapsed,
        "images_per_s": step * t.batch_size / max(elapsed, 1e-9),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "final_loss": last_loss,
        "config_id": config_id,
        "provenance": provenance("model", method_name(p), device_label(device)),
    }
    if d.main:
        if live is not None:
            live.end()
        with atomic_dir(out_dir) as tmp:
            shutil.copy2(ckpt_path, tmp / "checkpoint.pt")
            torch.save(model.online.backbone.state_dict(), tmp / "encoder.pt")
            write_json(tmp / "train.json", summary)
            if (work / "dvclive").exists():
                shutil.copytree(work / "dvclive", tmp / "dvclive")
        shutil.rmtree(work, ignore_errors=True)
    if d.world_size > 1:
        dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return summary
