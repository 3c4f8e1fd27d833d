"""LIIR in the harness: trained by the generic loop on clips of training videos (both
phases in one run), its clip batch (video ids), its encoder propagated by `hvc propagate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import hvc.data.demo as demo
import hvc.train as train_module
from hvc.config.ids import stage_ids, train_config
from hvc.config.params import DemoParams, Params, ParamsError, load_params
from hvc.data.shards import make_stream, video_id, write_training_shards
from hvc.io import read_json
from hvc.methods import batch_kind, get_method
from hvc.methods.liir.method import LIIR

ROOT = Path(__file__).resolve().parents[1]

SMALL = DemoParams(
    seed=0, num_sequences=2, num_frames=6, height=48, width=64, max_objects=2, train_size=48, train_copies=1,
    train_videos=4, train_video_frames=12,
)  # fmt: skip


def liir_params(**train) -> Params:
    """LIIR on 32 x 32 pairs, batch 4, one step in five of phase 2, a 16-frame bank."""
    p = Params().model_copy(update={"method": "liir", "device": "cpu"})
    t = dict(batch_size=4, max_steps=20, workers=0, checkpoint_every=5, log_every=1, crop_size=32) | train
    return p.model_copy(
        update={
            "train": p.train.model_copy(update=t),
            "liir": p.liir.model_copy(update=dict(phase2_share=0.2, bank_frames=16)),
        }
    )


@pytest.fixture(scope="module")
def liir_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    demo.build_demo(SMALL, out, videos=True)
    index = write_training_shards(liir_params(), out, out.parent / "shards")
    assert index["unit"] == "video" and index["num_samples"] == 4
    return out.parent / "shards"


def _metric(model: Path, name: str) -> list[float]:
    tsv = model / "dvclive" / "plots" / "metrics" / "train" / f"{name}.tsv"
    return [float(line.split()[-1]) for line in tsv.read_text().splitlines()[1:]]


def test_liir_is_registered_and_its_params_reach_the_method():
    assert batch_kind("liir") == "clips" and get_method("liir") is LIIR
    p = liir_params()
    method = LIIR.build(p)
    assert method.config.image_size == 32 and method.config.bank_frames == 16
    assert (method.config.phase1.lr, method.config.phase2.lr) == (1e-3, 1e-4)
    assert method.phase1_steps(20) == 16 and method.phase1_steps(35) == 28
    spec = method.data_spec(p)
    assert (spec.kind, spec.clip_length, spec.frame_gap) == ("clips", 9, 1)
    # per-phase batch sizes: the loop's by default (equal budgets), the paper's 32, then 12 when set
    assert (p.liir.batch_size1, p.liir.batch_size2) == (None, None) and spec.batch_size is None
    paper = p.model_copy(update={"liir": p.liir.model_copy(update={"batch_size1": 32, "batch_size2": 12})})
    method = LIIR.build(paper)
    assert (method.data_spec(paper).batch_size, method.data_spec(paper, 1).batch_size) == (32, 12)
    with pytest.raises(ValueError, match="phases 0 and 1"):
        method.data_spec(p, 2)
    q = p.model_copy(update={"liir": p.liir.model_copy(update=dict(batch_size2=6, phase2_design="code", border="zero", scale_radius=False))})
    coded = LIIR.build(q)
    assert coded.data_spec(q, 1).batch_size == 6
    assert (coded.config.phase2_design, coded.config.train_border, coded.config.train_radius_size) == ("code", "zero", None)
    assert (method.config.phase2_design, method.config.train_border, method.config.train_radius_size) == ("paper", "mask", 256)
    with pytest.raises(ParamsError, match="phase2_design"):
        load_params(ROOT / "params.yaml", {"method": "liir", "liir": {"phase2_design": "both"}})
    # the liir section is part of the model id (and only of LIIR's)
    other = p.model_copy(update={"liir": p.liir.model_copy(update={"lr2": 5e-5})})
    assert stage_ids(other)["train"] != stage_ids(p)["train"] and stage_ids(other)["shards"] == stage_ids(p)["shards"]
    assert "liir.lr2" in train_config(p)["params"] and not any(k.startswith("liir.") for k in train_config(Params())["params"])
    with pytest.raises(ParamsError, match="train.crop_size"):
        LIIR.build(p.model_copy(update={"train": p.train.model_copy(update={"crop_size": 34})}))
    with pytest.raises(ParamsError, match="frame_gap_probs"):
        load_params(ROOT / "params.yaml", {"method": "liir", "liir": {"frame_gaps": [1, 2], "frame_gap_probs": [1.0]}})


def test_clip_batches_carry_the_video_id(liir_shards):
    p = liir_params()
    method = LIIR.build(p)
    stream = make_stream(liir_shards, method.data_spec(p), 4, seed=0)
    batch = next(iter(stream))
    assert batch["frames"].shape == (4, 2, 3, 32, 32)
    keys = [f"train_videos__train-{i:03d}" for i in range(4)]
    assert sorted(batch["video_id"].tolist()) == sorted(video_id(k) for k in keys)
    assert batch["video_id"].dtype == torch.long


def test_liir_runs_both_phases_through_the_generic_loop(liir_shards, tmp_path):
    p = liir_params(max_steps=5)
    summary = train_module.train(p, liir_shards, tmp_path / "model", progress=False)
    assert summary["steps"] == 5 and summary["method"] == "liir"
    model = tmp_path / "model"
    assert _metric(model, "lr") == [1e-3] * 4 + [1e-4]  # phase 1, then phase 2 (round(5 * 0.8) = 4 steps)
    assert len(_metric(model, "compact")) == 1  # compactness only in phase 2
    state = torch.load(model / "checkpoint.pt", weights_only=False)
    assert int(state["model"]["bank.filled"].sum()) == 4 and bool(state["model"]["key_synced"])
    assert read_json(model / "encoder.json")["method"] == "liir"


@pytest.mark.slow
def test_liir_training_lowers_the_loss_in_both_phases(liir_shards, tmp_path):
    p = liir_params()
    summary = train_module.train(p, liir_shards, tmp_path / "model", progress=False)
    assert summary["steps"] == 20 and summary["method"] == "liir"
    model = tmp_path / "model"
    lr = _metric(model, "lr")
    assert lr[:16] == [1e-3] * 16 and lr[16:] == [1e-4] * 4  # phase 1, then phase 2
    rec = _metric(model, "rec")
    assert np.mean(rec[12:16]) < 0.8 * np.mean(rec[:3]), rec  # phase 1 lowers the reconstruction loss
    compact = _metric(model, "compact")
    assert len(compact) == 4  # compactness only in phase 2 (dvclive logs it from step 17 on)
    negatives = _metric(model, "negatives")
    assert negatives[0] == 0 and negatives[-1] > 0  # the bank fills with other videos' frames
    spec = read_json(model / "encoder.json")
    assert (spec["method"], spec["colour_space"], spec["stride"]) == ("liir", "lab", 4)
    state = torch.load(model / "checkpoint.pt", weights_only=False)
    assert int(state["model"]["bank.filled"].sum()) == 16 and bool(state["model"]["key_synced"])


class Killed(Exception):
    """Stands for a kill right after a checkpoint was written."""


@pytest.mark.slow
def test_liir_resume_is_bit_identical_across_the_phase_switch(liir_shards, tmp_path, monkeypatch):
    """Runs killed right after the checkpoint of step 16 (the last of phase 1) or of step 18
    (inside phase 2) resume to the same weights, bank and Adam state as an uninterrupted run."""
    p = liir_params(checkpoint_every=1)
    full = train_module.train(p, liir_shards, tmp_path / "full", progress=False)
    ref = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    save = train_module._save_checkpoint
    for stop in (16, 18):

        def save_then_die(run, stop=stop):
            save(run)
            if run.step == stop:
                raise Killed

        out = tmp_path / f"resumed{stop}"
        monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            train_module.train(p, liir_shards, out, progress=False)
        monkeypatch.setattr(train_module, "_save_checkpoint", save)
        assert not out.exists()
        summary = train_module.train(p, liir_shards, out, progress=False)
        assert summary["steps"] == 20 and summary["final_loss"] == full["final_loss"]
        got = torch.load(out / "checkpoint.pt", weights_only=False)
        assert got["model"].keys() == ref["model"].keys()
        for k, v in ref["model"].items():
            assert torch.equal(v, got["model"][k]), (stop, k)
        for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values(), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a), stop


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_liir_resumes_bit_identically_after_sigkill(liir_shards, tmp_path):
    """`hvc train` for LIIR killed with SIGKILL once a checkpoint at or past the phase switch
    exists, then run again, writes the encoder of an uninterrupted run, byte for byte."""
    import os
    import signal
    import subprocess
    import time

    import yaml

    cfg = tmp_path / "liir.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "method": "liir",
                "device": "cpu",
                "train": {"batch_size": 4, "max_steps": 10, "workers": 0, "checkpoint_every": 1, "crop_size": 32},
                "liir": {"phase2_share": 0.2, "bank_frames": 16},
            }
        )
    )
    cmd = ["hvc", "train", "--params", str(ROOT / "params.yaml"), "--params", str(cfg), "--shards", str(liir_shards), "--threads", "1"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, capture_output=True, env=env)
    out = tmp_path / "killed"
    ckpt = tmp_path / ".killed.work" / "checkpoint.pt"
    proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    step, deadline = 0, time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if ckpt.exists():
            try:
                step = torch.load(ckpt, weights_only=False)["step"]
            except Exception:  # noqa: BLE001 - replaced while reading
                step = 0
            if step >= 8:  # phase 1 is steps 1-8 of 10
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists() and 8 <= step < 10
    subprocess.run([*cmd, "--out", str(out)], check=True, capture_output=True, env=env)
    assert (out / "encoder.pt").read_bytes() == (tmp_path / "full" / "encoder.pt").read_bytes()
    a = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)  # the bank and the key encoder too
