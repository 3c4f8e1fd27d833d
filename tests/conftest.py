"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hvc.data.demo import build_demo
from hvc.config.params import load_params

# ../shared/data/davis2016-sample relative to the repository root (tests/..)
DAVIS2016_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/davis2016-sample"


@pytest.fixture(scope="session")
def davis2016_sample() -> Path:
    """The real DAVIS 2016 sample (6 val sequences with masks); skips the test when absent."""
    if not DAVIS2016_SAMPLE.is_dir():
        pytest.skip(f"real-data test skipped: the DAVIS 2016 sample folder {DAVIS2016_SAMPLE} is absent")
    return DAVIS2016_SAMPLE


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The tiny demo (params.yaml + tests/configs/tiny.yaml: 2 sequences of 6 frames, 24
    training images), built once per test run; copy before changing it."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("demo") / "demo"
    build_demo(load_params([root / "params.yaml", root / "tests" / "configs" / "tiny.yaml"]).demo, out)
    return out


@pytest.fixture
def bench(demo_dir, tmp_path) -> Path:
    """A private copy of the demo benchmark (DAVIS 2017 layout) to damage."""
    return Path(shutil.copytree(demo_dir / "benchmark", tmp_path / "benchmark"))
