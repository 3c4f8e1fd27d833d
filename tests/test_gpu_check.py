"""The GPU check script runs (``--quick``: tiny sizes on the CPU) and prints every figure."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_quick_prints_every_figure():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    for needle in (
        "training fp32: batch 2 at 32x32",
        "training bf16: batch 2 at 32x32",
        "windowed",
        "dense-masked",
        "argmax agreement 100.00 %",
        "features 64x96",
        "DAVIS 2017 val estimate (30 videos, 1999 frames, 1969 propagated)",
    ):
        assert needle in out, f"{needle!r} missing from:\n{out}"
