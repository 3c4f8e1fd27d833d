"""STT through the harness's generic training loop (``hvc.train.train``, as the method
contract drives every method): a short seeded run on demo shards lowers the loss in both
steps, the spatial phase (InfoNCE on images) and the temporal phase (reconstruction and
distillation on frame pairs), read from the run's training log. Slow: 476 s on a loaded 2-core CPU (load 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvc.config.params import load_params, validate_params
from hvc.data.demo import build_demo
from hvc.data.shards import write_training_shards

ROOT = Path(__file__).resolve().parents[1]
PHASE_STEPS = 16

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Video shards of a tiny demo (4 training videos of 12 frames): STT's temporal phase
    reads pairs of them, its spatial phase single frames."""
    base = load_params([ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]).demo
    root = tmp_path_factory.mktemp("stt-loop")
    build_demo(base.model_copy(update=dict(train_videos=4, train_video_frames=12)), root / "demo", videos=True)
    write_training_shards(validate_params({"method": "stt"}), root / "demo", root / "shards")
    return root / "shards"


def test_generic_loop_lowers_the_loss_in_both_phases(shards, tmp_path, davis_compare):
    from hvc.train import train

    p = validate_params({
        "method": "stt", "device": "cpu", "seed": 0,
        "train": {"crop_size": 64, "batch_size": 4, "max_steps": 2 * PHASE_STEPS, "workers": 0, "checkpoint_every": 10**6, "log_every": 1},
        # a queue as long as a batch holds only real keys from the second step on
        "stt": {"spatial_share": 0.5, "moco_queue": 4, "moco_hidden": 32, "moco_dim": 16, "view_size": 32, "spatial_lr": 0.05, "temporal_lr": 1e-3},
    })  # fmt: skip
    summary = train(p, shards, tmp_path / "model", progress=False, verify="size")
    assert [(ph["name"], ph["steps"]) for ph in summary["phases"]] == [("spatial", PHASE_STEPS), ("temporal", PHASE_STEPS)]
    curves = davis_compare.phase_curves(tmp_path / "model")
    assert {k: len(v) for k, v in curves.items()} == {"spatial": PHASE_STEPS, "temporal": PHASE_STEPS}
    for name, curve in curves.items():
        # each phase's first step is left out: the spatial one compares against the queue's
        # random initial keys, the temporal one has its student just copied from the teacher
        early, late = np.mean(curve[1:5]), np.mean(curve[-4:])
        assert late < early, (name, curve)
