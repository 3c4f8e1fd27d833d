"""The benchmark scripts run (tiny sizes on the CPU) and print every figure, so they do not
rot between the rare runs on a GPU."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}


def _run(*args: str) -> str:
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_gpu_check_quick_prints_every_figure():
    out = _run(str(ROOT / "benchmarks" / "gpu_check.py"), "--quick")
    for needle in (
        "training fp32: batch 2 at 32x32",
        "training bf16: batch 2 at 32x32",
        "windowed",
        "dense-masked",
        "argmax agreement 100.00 %, soft labels bit-identical: True",
        "features 64x96",
        "DAVIS 2017 val estimate (30 videos, 1999 frames, 1969 propagated)",
    ):
        assert needle in out, f"{needle!r} missing from:\n{out}"


def test_gpu_check_skips_sections_past_its_budget():
    out = _run(str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--budget", "0")
    assert "training fp32: skipped" in out and "propagation: skipped" in out, out
    assert "images/s" not in out and "ms/frame" not in out, out


def test_train_speed_runs_the_real_step_and_the_stage():
    out = _run(str(ROOT / "benchmarks" / "train_speed.py"), "--cpu-batch", "2", "--cpu-size", "32", "--steps", "1", "--warmup", "0")
    assert "batch 2 at 32x32" in out and "images/s" in out, out
    out = _run(str(ROOT / "benchmarks" / "train_speed.py"), "--stage", str(ROOT / "params.yaml"), "--stage-steps", "2", "--rounds", "1")
    assert "round 1: pure step" in out and "training stage" in out and "CPU time per image" in out, out


def test_liir_inference_speed_prints_both_paths():
    import pytest

    sample = ROOT.parent / "shared" / "data" / "davis2016-sample"
    if not sample.is_dir():
        pytest.skip(f"no DAVIS 2016 sample at {sample}")
    out = _run(str(ROOT / "benchmarks" / "liir_inference_speed.py"), "--davis", str(sample), "--frames", "3", "--scale", "0.1", "--context", "2")
    for needle in ("2 frames of 48 x 85, LIIR window radius 1 cells", "encoder alone:", "LIIR's own inference:", "generic propagation (context 2, radius 12):"):
        assert needle in out, f"{needle!r} missing from:\n{out}"
