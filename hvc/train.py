"""The training loop of every method (:mod:`hvc.methods`): resumable, single- or multi-GPU.

The method (``params.method``; HVC, paper §3.3, Algorithm 1, by default) says what a training
sample is, computes the loss and does its own updates after each optimizer step
(:class:`hvc.methods.base.Method`); this loop streams the shards, steps the optimizer,
checkpoints, logs and writes the outputs.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hvc.config.ids import content_id, train_config
from hvc.config.code import provenance
from hvc.config.params import Params, ParamsError
from hvc.data.shards import TrainStream, make_stream, verify_shards
from hvc.device import Dist, convert_sync_batchnorm, device_label, init_distributed, pick_device
from hvc.io import DataError, atomic_dir, atomic_path, first_line, load_torch, write_json
from hvc.methods import get_method
from hvc.methods.base import Method, Phase

log = logging.getLogger(__name__)


def build_model(p: Params) -> Method:
    """The method of ``p.method`` built from the parameters (for HVC: the HVC model of the
    train section's settings, Tables 6, 7c, 7d, 7f). Raises KeyError for an unknown method."""
    return get_method(p.method).build(p)


def train_step(
    method: Method,
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    step: int,
    total_steps: int,
    bf16: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One iteration: the method's loss, backward, optimizer step, then the method's
    :meth:`~hvc.methods.base.Method.after_step` (for HVC, Algorithm 1 with the EMA update
    of Eq. 1).

    Args:
        method: the method module (for ``after_step``).
        forward: what computes the loss dict from the batch: ``method``, its DDP wrapper or
            its compiled form.
        batch: the method's batch (dict of tensors) on the method's device.
        step: index k of this step (0-based) of ``total_steps``.
        bf16: autocast the forward pass to bfloat16.
    Returns:
        (loss dict with ``"loss"``, the scalars ``after_step`` returned, e.g. HVC's momentum).
    """
    device_type = next(iter(batch.values())).device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        losses = forward(batch)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return losses, method.after_step(step, total_steps)


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


@dataclass
class _PhasePlan:
    """One training phase as the loop runs it: its data stream, its step budget (the end
    step, exclusive, counted over the whole run) and its share of the wall-time budget."""

    phase: Phase
    stream: TrainStream
    end_step: int
    seconds: float | None
    batch: int  # samples per step over all processes (the phase's DataSpec.batch_size, else train.batch_size)


@dataclass
class _Run:
    """The state of one training run shared by the functions of the loop."""

    p: Params
    device: torch.device
    d: Dist
    model: Method
    plans: list[_PhasePlan]
    bf16: bool
    config_id: str
    work: Path
    shard_dir: Path
    optimizer: torch.optim.Optimizer | None = None
    loader: DataLoader | None = None
    phase: int = -1  # index of the phase the loop is in (-1: none entered yet)
    starts: list[tuple[int, float]] = field(default_factory=list)  # (step, elapsed) at each entered phase
    step: int = 0
    elapsed: float = 0.0
    last_loss: float | None = None

    @property
    def ckpt_path(self) -> Path:
        return self.work / "checkpoint.pt"

    @property
    def total_steps(self) -> int:
        return self.plans[-1].end_step

    @property
    def stream(self) -> TrainStream:
        return self.plans[self.phase].stream

    @property
    def steps_per_epoch(self) -> int:
        return len(self.stream)

    @property
    def phase_step(self) -> int:
        """Steps done in the current phase."""
        return self.step - self.starts[self.phase][0]

    @property
    def phase_steps(self) -> int:
        """Planned steps of the current phase."""
        return self.plans[self.phase].end_step - self.starts[self.phase][0]


def _phase_plans(p: Params, model: Method, shard_dir: Path, d: Dist) -> list[_PhasePlan]:
    """The method's phases with their streams and budgets. Steps: ``train.max_steps`` split
    by the phases' shares (cumulative rounding), else ``train.epochs`` passes of each phase's
    stream times its share; seconds: ``train.max_seconds`` times each share.

    Raises:
        TypeError: a phase's data spec is of another kind than the phase.
        ValueError: a phase's global batch is not divisible by the number of processes.
    """
    t, plans, cum, end = p.train, [], 0.0, 0
    phases = model.phases()
    for i, phase in enumerate(phases):
        spec = model.data_spec(p, i)
        if spec.kind != phase.kind:
            raise TypeError(f"method {p.method!r}: phase {phase.name!r} trains on {phase.kind} but its data spec is of {spec.kind}")
        batch = spec.batch_size or t.batch_size
        if batch % d.world_size:
            raise ValueError(f"phase {phase.name!r}: batch size {batch} is not divisible by the {d.world_size} processes")
        stream = make_stream(shard_dir, spec, batch // d.world_size, p.seed, d.rank, d.world_size, t.workers)
        cum += phase.share
        whole = t.max_steps if t.max_steps else None
        end = round(whole * cum) if whole else end + round(phase.share * t.epochs * len(stream))
        if i == len(phases) - 1 and whole:
            end = whole
        plans.append(_PhasePlan(phase, stream, end, t.max_seconds * phase.share if t.max_seconds else None, batch))
    return plans


def _setup(p: Params, shard_dir: Path, out_dir: Path, verify: str) -> _Run:
    """Device and process group, the seeded method, its phases and their data streams."""
    t = p.train
    device = pick_device(p.device, int(os.environ.get("LOCAL_RANK", "0")))
    d = init_distributed(device)
    if t.batch_size % d.world_size:
        raise ValueError(f"train.batch_size = {t.batch_size} is not divisible by the {d.world_size} processes")
    torch.manual_seed(p.seed)
    random.seed(p.seed)
    np.random.seed(p.seed)
    model = build_model(p).to(device)
    if d.world_size > 1 and t.sync_bn:
        model = convert_sync_batchnorm(model, device)
    if device.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    verify_shards(shard_dir, full=verify == "sha256", rank=d.rank, world_size=d.world_size)
    return _Run(
        p=p,
        device=device,
        d=d,
        model=model,
        plans=_phase_plans(p, model, shard_dir, d),
        bf16=t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda"),
        config_id=content_id(train_config(p)),
        work=out_dir.with_name(f".{out_dir.name}.work"),
        shard_dir=shard_dir,
    )


def _enter_phase(run: _Run, phase: int, resumed: bool = False) -> None:
    """Start phase ``phase``: the method's :meth:`~hvc.methods.base.Method.start_phase`, a
    fresh optimizer and the phase's data loader. ``resumed``: the run continues a phase it
    had entered before (its start is already recorded)."""
    run.phase = phase
    if not resumed:
        run.starts.append((run.step, run.elapsed))
    run.model.start_phase(phase)
    run.optimizer = run.model.make_optimizer(run.p, fused=run.device.type == "cuda")
    t = run.p.train
    run.loader = DataLoader(
        run.stream,
        batch_size=None,
        num_workers=t.workers,
        pin_memory=run.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if t.workers else None,
    )
    if run.plans[phase].phase.share < 1.0:
        log.info("phase %d/%d %r (%s) from step %d", phase + 1, len(run.plans), run.plans[phase].phase.name, run.plans[phase].phase.kind, run.step)


_STATE_KEYS = ("config_id", "model", "optimizer", "step", "elapsed", "rng")


def _resume(run: _Run) -> None:
    """Enter the first phase, or load the run's checkpoint when one of the same
    configuration exists and continue in the phase it was in.

    The checkpoint lies in a work folder beside the output (often on a disk shared with
    other people), so it is loaded weights-only (:func:`hvc.io.load_torch`): nothing in it
    is executed. A checkpoint of another configuration is ignored (training starts over).

    Raises:
        DataError: naming the checkpoint and saying to delete it, when it is corrupt, holds
            Python objects a weights-only load refuses, is not a training state of this
            loop, or does not fit the model.
    """
    path = run.ckpt_path
    state = _load_checkpoint(path, run.work) if path.exists() else None
    if state is not None and state["config_id"] != run.config_id:
        log.warning("%s belongs to another configuration; starting over", path)
        state = None
    if state is None:
        _enter_phase(run, 0)
        return
    delete = f"; delete {path} (or its folder {run.work}) to start this training over"
    try:
        run.step, run.elapsed = int(state["step"]), float(state["elapsed"])
        run.starts = [(int(s), float(e)) for s, e in state.get("phase_starts", [(0, 0.0)])]
        _enter_phase(run, len(run.starts) - 1, resumed=True)
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise DataError(path, f"cannot resume: the state does not fit this model ({type(e).__name__}: {first_line(e)}){delete}") from None
    log.info("resuming from %s at step %d/%d", path, run.step, run.total_steps)


def _load_checkpoint(path: Path, work: Path) -> dict:
    """The training state in ``path``, loaded weights-only; DataError (naming it and what to
    delete) when it is corrupt, refused or not a training state of this loop."""
    delete = f"; delete {path} (or its folder {work}) to start this training over"
    try:
        state = load_torch(path, "training checkpoint", "a checkpoint.pt written by `hvc train`", numpy_state=True)
    except DataError as e:
        raise DataError(path, f"cannot resume: {e.problem}{delete}") from None
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        found = sorted(map(str, state))[:5] if isinstance(state, dict) else type(state).__name__
        raise DataError(path, f"cannot resume: not a training state of `hvc train` (found {found}){delete}")
    return state


def _save_checkpoint(run: _Run) -> None:
    """Write the full training state atomically (main process only)."""
    if not run.d.main:
        return
    state = {
        "config_id": run.config_id,
        "method": run.p.method,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "elapsed": run.elapsed,
        "phase_starts": [list(x) for x in run.starts],
        "rng": _rng_state(),
        "params": run.p.model_dump(),
    }
    with atomic_path(run.ckpt_path) as tmp:
        torch.save(state, tmp)


def _duration(seconds: float) -> str:
    """A duration as ``1 h 02 min``, ``4 min 10 s`` or ``12 s``."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


class _Lines:
    """A file for a progress bar that is not a terminal: each redraw becomes one line (the
    carriage return tqdm starts a redraw with, and its padding, dropped), so a log file
    holds plain lines that other log records never run into."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _Monitor:
    """What a running training shows (main process only).

    - dvclive metrics every ``train.log_every`` steps, logged at the optimizer step they
      belong to (``Live.step`` set to the number of steps done before each record; dvclive's
      own counter would count records, not steps, and restart from its last row on resume);
    - a heartbeat every ``heartbeat`` steps: one line on the ``hvc.heartbeat`` logger (step
      of total, loss, images/s since the last line, ETA), which ``hvc train --log FILE``
      sends to stderr as well as to the log file;
    - a tqdm progress bar on ``bar_file`` (stderr by default); on a file that is not a
      terminal it is redrawn at most every ``BAR_FILE_INTERVAL`` seconds, so a log file
      gets a line every 30 s (:class:`_Lines`), not a carriage return per step.
    """

    BAR_FILE_INTERVAL = 30.0  # seconds between redraws of a progress bar written to a file

    def __init__(self, run: _Run, progress: bool, heartbeat: int | None = None, bar_file: Any = None) -> None:
        import sys

        self.live = self.bar = None
        self.every = run.p.train.log_every
        self.heartbeat = heartbeat if heartbeat is not None else run.p.train.log_every
        self.t_window, self.n_window = time.perf_counter(), 0
        self.t_beat, self.n_beat = self.t_window, 0
        self.start_step, self.start_elapsed = run.step, run.elapsed
        if not run.d.main:
            return
        from dvclive import Live

        run.work.mkdir(parents=True, exist_ok=True)
        self.live = Live(str(run.work / "dvclive"), resume=run.step > 0, dvcyaml=None, save_dvc_exp=False, report=None)
        if progress:
            from tqdm import tqdm

            file = bar_file if bar_file is not None else sys.stderr
            tty = hasattr(file, "isatty") and file.isatty()
            file = file if tty else _Lines(file)
            self.bar = tqdm(
                total=run.total_steps, initial=run.step, desc="train", unit="step", file=file, dynamic_ncols=tty,
                ncols=None if tty else 100, ascii=not tty,
                mininterval=0.1 if tty else self.BAR_FILE_INTERVAL, maxinterval=10 if tty else self.BAR_FILE_INTERVAL,
            )  # fmt: skip

    def step(self, run: _Run, losses: dict[str, torch.Tensor], logs: dict[str, float], samples: int) -> None:
        """Record one finished step of ``samples`` training samples (all ranks)."""
        self.n_window += samples
        self.n_beat += samples
        if self.live is not None and (run.step % self.every == 0 or run.step == run.total_steps):
            now = time.perf_counter()
            ips = self.n_window / max(now - self.t_window, 1e-9)
            self.t_window, self.n_window = now, 0
            self.live.step = run.step  # the optimizer steps done (x axis of the curves)
            for k, v in losses.items():
                self.live.log_metric(f"train/{k}", float(v.detach()))
            for k, v in logs.items():
                self.live.log_metric(f"train/{k}", v)
            self.live.log_metric("train/lr", run.optimizer.param_groups[0]["lr"])
            self.live.log_metric("train/images_per_s", ips)
            self.live.next_step()  # writes the rows; the next record sets its own step
        if run.d.main and self.heartbeat > 0 and (run.step % self.heartbeat == 0 or run.step == run.total_steps):
            self._beat(run)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{run.last_loss:.4f}", refresh=False)

    def _beat(self, run: _Run) -> None:
        """One heartbeat line: step of total, loss, images/s since the last line, ETA."""
        now = time.perf_counter()
        ips = self.n_beat / max(now - self.t_beat, 1e-9)
        self.t_beat, self.n_beat = now, 0
        done = run.step - self.start_step
        per_step = (run.elapsed - self.start_elapsed) / max(done, 1)
        eta = (run.total_steps - run.step) * per_step
        if run.p.train.max_seconds is not None:
            eta = min(eta, max(run.p.train.max_seconds - run.elapsed, 0.0))
        logging.getLogger("hvc.heartbeat").info(
            "train step %d/%d (%.0f%%) | loss %.4f | %.1f images/s | %.2f s/step | ETA %s",
            run.step, run.total_steps, 100 * run.step / max(run.total_steps, 1), run.last_loss, ips, per_step, _duration(eta),
        )  # fmt: skip

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _to_device(batch: Any, run: _Run) -> dict[str, torch.Tensor]:
    """The batch on the run's device; 4-d float tensors channels-last on the GPU when asked."""
    channels_last = run.device.type == "cuda" and run.p.train.channels_last
    out = {}
    for k, v in batch.items():
        v = v.to(run.device, non_blocking=True)
        if channels_last and v.dim() == 4 and v.is_floating_point():
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _checked_loss(run: _Run, losses: dict[str, torch.Tensor]) -> float:
    """The step's loss as a float; NonFiniteLoss when it is NaN or infinite."""
    value = float(losses["loss"].detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"train: the loss is {value} at step {run.step + 1} (train.lr = {run.p.train.lr}): training diverged; "
            "lower train.lr or check the training images (nothing of this run after the last checkpoint is kept)"
        )
    return value


def _set_lr(run: _Run) -> None:
    """The method's learning rate for the coming step (constant for HVC), counted in the
    current phase (:meth:`~hvc.methods.base.Method.lr_at`)."""
    lr = run.model.lr_at(run.phase_step, run.phase_steps, run.p.train.lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr


def _out_of_time(run: _Run) -> bool:
    """``train.max_seconds`` of training wall time have passed (then the run ends here)."""
    limit = run.p.train.max_seconds
    return limit is not None and run.elapsed >= limit


def _phase_over(run: _Run) -> bool:
    """The current phase has run its steps, or its share of ``train.max_seconds``."""
    plan = run.plans[run.phase]
    if run.step >= plan.end_step:
        return True
    return plan.seconds is not None and run.elapsed - run.starts[run.phase][1] >= plan.seconds


def _next_phase(run: _Run) -> bool:
    """Move on while the current phase is over; False once the last one is."""
    while _phase_over(run):
        if run.phase + 1 == len(run.plans):
            return False
        _enter_phase(run, run.phase + 1)
    return True


def _run_epoch(run: _Run, forward: nn.Module, monitor: _Monitor, stop: _StopFlag) -> None:
    """Train from ``run.step`` to the end of its epoch of the current phase's stream (or the
    phase's end); checkpoint every ``checkpoint_every`` steps; on SIGTERM checkpoint and
    exit 143."""
    epoch, in_epoch = divmod(run.phase_step, run.steps_per_epoch)
    run.stream.set_epoch(epoch, skip_batches=in_epoch)
    tic = time.perf_counter()
    for batch in run.loader:
        batch = _to_device(batch, run)
        _set_lr(run)
        losses, logs = train_step(run.model, forward, run.optimizer, batch, run.step, run.total_steps, run.bf16)
        run.last_loss = _checked_loss(run, losses)
        run.step += 1
        now = time.perf_counter()
        run.elapsed += now - tic  # wall time per step, waiting for data included
        tic = now
        monitor.step(run, losses, logs, next(iter(batch.values())).shape[0] * run.d.world_size)
        if run.step % run.p.train.checkpoint_every == 0 or stop.stop:
            _save_checkpoint(run)
        if stop.stop:
            raise SystemExit(143)
        if _phase_over(run):
            return
    if run.phase_step < (epoch + 1) * run.steps_per_epoch and not _phase_over(run):
        raise DataError(
            run.shard_dir,
            f"epoch {epoch} ended after {run.phase_step - epoch * run.steps_per_epoch} of the {run.steps_per_epoch} batches that "
            "index.json's sample counts promise: a shard holds fewer readable samples than listed; rebuild the shards",
        )


def _peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GiB (``getrusage`` ru_maxrss: KiB on
    Linux, bytes on macOS); the training memory on a CPU run."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def _summary(run: _Run) -> dict:
    """The Table 8 figures of the run (``train.json``)."""
    t, device = run.p.train, run.device
    ends = [(s, e) for s, e in run.starts[1:]] + [(run.step, run.elapsed)]
    phases = [
        {"name": plan.phase.name, "kind": plan.phase.kind, "planned_steps": plan.end_step - (run.plans[i - 1].end_step if i else 0),
         "steps": end[0] - start[0], "seconds": end[1] - start[1], "batch_size": plan.batch, "samples": (end[0] - start[0]) * plan.batch}
        for i, (plan, start, end) in enumerate(zip(run.plans, run.starts, ends))
    ]  # fmt: skip
    samples = sum(ph["samples"] for ph in phases)  # each phase at its own batch size
    return {
        "method": run.p.method,
        "steps": run.step,
        "epochs": run.step / len(run.plans[0].stream),
        "steps_per_epoch": len(run.plans[0].stream),
        "phases": phases,
        "global_batch": t.batch_size,
        "world_size": run.d.world_size,
        "train_seconds": run.elapsed,
        "samples": samples,
        "images_per_s": samples / max(run.elapsed, 1e-9),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_host_memory_gb": _peak_rss_gb(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "final_loss": run.last_loss,
        "config_id": run.config_id,
        "provenance": provenance("train", run.p.method, device_label(device)),
    }


def _write_outputs(run: _Run, out_dir: Path, summary: dict) -> None:
    """``out_dir`` atomically: checkpoint.pt, encoder.pt + encoder.json, train.json, dvclive/."""
    with atomic_dir(out_dir) as tmp:
        shutil.copy2(run.ckpt_path, tmp / "checkpoint.pt")
        torch.save(run.model.encoder().state_dict(), tmp / "encoder.pt")
        write_json(tmp / "encoder.json", run.model.encoder_spec().to_dict())
        for name, module in run.model.inference_modules().items():
            torch.save(module.state_dict(), tmp / f"{name}.pt")
        write_json(tmp / "train.json", summary)
        if (run.work / "dvclive").exists():
            shutil.copytree(run.work / "dvclive", tmp / "dvclive")
    shutil.rmtree(run.work, ignore_errors=True)


def train(p: Params, shard_dir: Path, out_dir: Path, progress: bool = True, verify: str = "sha256", heartbeat: int | None = None, bar_file: Any = None) -> dict:  # fmt: skip
    """Train the method of ``p.method`` on the shards and write ``out_dir`` atomically.

    Args:
        p: validated parameters (seed, device, method, train section).
        shard_dir: folder with ``index.json`` and the tar shards (image shards for methods
            trained on views, video shards for methods trained on clips).
        verify: ``"sha256"`` checks every shard's size and SHA-256 against index.json
            once per run (:func:`hvc.data.shards.verify_shards`); ``"size"`` only the sizes.
        out_dir: output folder; receives ``checkpoint.pt`` (full state), ``encoder.pt``
            (the method's encoder state dict, for propagation), ``encoder.json`` (its
            :class:`~hvc.methods.base.EncoderSpec`: method, input normalisation, colour
            space, stride, layers), ``<name>.pt`` for each of the method's inference
            modules, ``train.json`` (steps, wall time, images/s, peak GPU memory: Table 8;
            per phase its name, kind, planned and run steps and seconds) and ``dvclive/``
            logs. The method's phases run in order, each for its share of the budget.
        heartbeat: log one progress line (step, loss, images/s, ETA) on the
            ``hvc.heartbeat`` logger every this many steps (None: ``train.log_every``; 0: never).
        bar_file: where the progress bar goes (default stderr; a log file's stream).
    Returns:
        the summary written to ``train.json``.
    Raises:
        ValueError: the global batch is not divisible by the number of processes.
        DataError: a shard differs from index.json (size, checksum), is of the wrong unit
            (images for a clip method or the reverse), or an epoch yields fewer batches
            than index.json's sample counts promise (a shard lost samples).
        NonFiniteLoss: the loss is NaN or infinite (nothing of that step is saved).
        SystemExit(143): on SIGTERM, after saving a checkpoint.
    """
    run = _setup(p, shard_dir, out_dir, verify)
    _resume(run)
    d = run.d
    net: nn.Module = run.model
    if d.world_size > 1:
        net = DistributedDataParallel(run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    forward = torch.compile(net) if p.train.compile else net
    monitor, stop = _Monitor(run, progress, heartbeat, bar_file), _StopFlag()
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    run.model.train()
    try:
        while _next_phase(run):
            if stop.stop:  # SIGTERM between epochs (or while the loader yielded nothing)
                _save_checkpoint(run)
                raise SystemExit(143)
            _run_epoch(run, forward, monitor, stop)
    finally:
        stop.restore()
        monitor.close_bar()
    _save_checkpoint(run)
    summary = _summary(run)
    if d.main:
        if monitor.live is not None:
            monitor.live.end()
        _write_outputs(run, out_dir, summary)
    if d.world_size > 1:
        dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return summary
