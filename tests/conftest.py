"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# ../shared/data/davis2016-sample relative to the repository root (tests/..)
DAVIS2016_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/davis2016-sample"


@pytest.fixture(scope="session")
def davis2016_sample() -> Path:
    """The real DAVIS 2016 sample (6 val sequences with masks); skips the test when absent."""
    if not DAVIS2016_SAMPLE.is_dir():
        pytest.skip(f"real-data test skipped: the DAVIS 2016 sample folder {DAVIS2016_SAMPLE} is absent")
    return DAVIS2016_SAMPLE
