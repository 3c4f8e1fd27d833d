"""Training: a tiny model learns, DDP equals one process, an interrupted run resumes exactly."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from hvc.methods.hvc.method import HVCMethod as HVC
from hvc.data.shards import list_training_images, write_shards
from hvc.device import convert_sync_batchnorm
from hvc.train import train_step
from hvc.methods.hvc.views import TwoViews

ROOT = Path(__file__).resolve().parents[1]


def fixed_batch(n=8, size=32, seed=0):
    """n two-view samples of smooth random images (views, boxes), deterministic."""
    g = torch.Generator().manual_seed(seed)
    views = TwoViews(size, scale=(0.3, 1.0))
    out = []
    torch.manual_seed(seed)
    for _ in range(n):
        img = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), (48, 48), mode="bilinear")[0]
        out.append(views((img * 255).to(torch.uint8)))
    return {k: torch.stack(x) for k, x in zip(("view1", "view2", "box1", "box2"), zip(*out))}


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def test_tiny_model_loss_decreases():
    torch.manual_seed(0)
    model = HVC(proj_dim=32, radius=0.2)
    opt = torch.optim.Adam(trainable(model), lr=1e-3)
    batch = fixed_batch()
    losses = [train_step(model, model, opt, batch, k, 25)[0]["loss"].item() for k in range(25)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
    assert all(np.isfinite(losses))


def _ddp_worker(rank, world, init_file, state, batch, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = HVC(proj_dim=16, radius=0.3)
    model.load_state_dict(state)
    model = convert_sync_batchnorm(model, torch.device("cpu"))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(trainable(model), lr=0.1)
    n = batch["view1"].shape[0] // world
    local = {k: x[rank * n : (rank + 1) * n] for k, x in batch.items()}
    losses, states = [], []
    for k in range(2):
        loss = train_step(model, ddp, opt, local, k, 10)[0]["loss"].detach()
        dist.all_reduce(loss)
        losses.append(loss.item() / world)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    if rank == 0:
        torch.save({"losses": losses, "states": states}, out)
    dist.destroy_process_group()


def test_ddp_with_sync_batchnorm_equals_one_process_on_the_global_batch(tmp_path):
    torch.manual_seed(0)
    reference = HVC(proj_dim=16, radius=0.3)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    batch = fixed_batch(n=8)
    # SGD, not Adam: Adam divides by sqrt(v), which turns float noise in near-zero
    # gradients into lr-sized differences; SGD shows the DDP/SyncBN equality itself.
    opt = torch.optim.SGD(trainable(reference), lr=0.1)
    ref_losses, ref_states = [], []
    for k in range(2):
        ref_losses.append(train_step(reference, reference, opt, batch, k, 10)[0]["loss"].item())
        ref_states.append({k: v.clone() for k, v in reference.state_dict().items()})

    torch.multiprocessing.spawn(_ddp_worker, args=(2, tmp_path / "init", state, batch, tmp_path / "out.pt"), nprocs=2)
    result = torch.load(tmp_path / "out.pt")
    assert result["losses"] == pytest.approx(ref_losses, rel=1e-3)
    # the first update equals the single-process update to float tolerance (batch-norm
    # statistics are summed in another order, so relative 1e-3 of the update's size)
    for key, value in result["states"][0].items():
        if value.dtype.is_floating_point and key.startswith("online.backbone"):
            ref_update = ref_states[0][key] - state[key]
            ddp_update = value - state[key]
            assert (ddp_update - ref_update).abs().max() <= 1e-3 * ref_update.abs().max() + 1e-7, key


def _tiny_shards(tmp_path):
    src = tmp_path / "src" / "train"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((48, 48), Image.BILINEAR).save(src / f"{i:03d}.jpg", quality=95)
    write_shards(list_training_images(tmp_path / "src", "demo"), tmp_path / "src", tmp_path / "shards", "demo-train", max_count=4)
    params = tmp_path / "p.yaml"
    params.write_text(
        "device: cpu\ntrain:\n  crop_size: 32\n  batch_size: 4\n  max_steps: 8\n  workers: 0\n"
        "  checkpoint_every: 1\n  log_every: 1\nhvc:\n  proj_dim: 16\n"
    )
    return params


def _train_cmd(params, shards, out):
    return [sys.executable, "-m", "hvc.cli", "train", "--params", str(ROOT / "params.yaml"), "--params", str(params),
            "--shards", str(shards), "--out", str(out)]  # fmt: skip


def _step_of(ckpt):
    try:
        return torch.load(ckpt, weights_only=False)["step"]
    except Exception:
        return -1


@pytest.mark.slow
def test_killed_training_resumes_bit_for_bit(tmp_path):
    params = _tiny_shards(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train_cmd(params, tmp_path / "shards", tmp_path / "full"), check=True, env=env, capture_output=True)

    out = tmp_path / "resumed"
    ckpt = out.with_name(f".{out.name}.work") / "checkpoint.pt"
    proc = subprocess.Popen(_train_cmd(params, tmp_path / "shards", out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and _step_of(ckpt) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _step_of(ckpt)
    assert 3 <= killed_at < 8, "the run was not interrupted mid-training"
    assert not out.exists()  # nothing half-written
    subprocess.run(_train_cmd(params, tmp_path / "shards", out), check=True, env=env, capture_output=True)

    full = torch.load(tmp_path / "full" / "encoder.pt")
    resumed = torch.load(out / "encoder.pt")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(out / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_curves_are_on_the_optimizer_step_and_the_terminal_gets_a_heartbeat(tmp_path):
    """dvclive rows at the optimizer step (log_every 3: steps 3, 6, 8), not at its own record
    count; with --log, stderr carries only the heartbeat lines while the log file gets the
    log and a progress bar redrawn rarely (a few carriage returns, not one per step)."""
    params = _tiny_shards(tmp_path)
    extra = tmp_path / "every3.yaml"
    extra.write_text("train:\n  log_every: 3\n")
    log_file = tmp_path / "logs" / "train.log"
    cmd = _train_cmd(params, tmp_path / "shards", tmp_path / "model") + ["--params", str(extra), "--log", str(log_file)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, check=True)
    metrics = tmp_path / "model" / "dvclive" / "plots" / "metrics" / "train"
    rows = [line.split("\t") for line in (metrics / "loss.tsv").read_text().splitlines()]
    assert rows[0][:2] == ["step", "loss"] or rows[0][-2:] == ["step", "loss"]
    steps = [int(r[rows[0].index("step")]) for r in rows[1:]]
    assert steps == [3, 6, 8]  # the optimizer step of each record
    beats = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(beats) == 3 and all("hvc.heartbeat" in b for b in beats), proc.stderr
    assert re.search(r"train step 6/8 \(75%\) \| loss \d+\.\d{4} \| \d+\.\d images/s \| \d+\.\d\d s/step \| ETA \d+ s", beats[1]), beats[1]
    text = log_file.read_text()
    assert "stage train done" in text and "train step 8/8" in text
    bar = [line for line in text.splitlines() if line.startswith("train:")]
    assert "\r" not in text and 1 <= len(bar) <= 3 and "8/8" in bar[-1], text  # the bar: one line per redraw (every 30 s)
