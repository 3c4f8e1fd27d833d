"""Slow, real data: a short LIIR training on the DAVIS 2016 sample's train videos beats the
same network at random initialisation on its 6 val sequences (J&F), through LIIR's own
inference and through the generic label propagation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _compare_module():
    spec = importlib.util.spec_from_file_location("davis2016_compare", ROOT / "benchmarks" / "davis2016_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_liir_training_beats_its_random_initialisation(davis2016_sample, tmp_path):
    cmp = _compare_module()
    videos = cmp.val_sequences(davis2016_sample, scale=0.125)
    assert len(videos) == 6
    result = cmp.run("liir", samples=480, batch=8, size=64, out=tmp_path, videos=videos, sample=davis2016_sample)
    assert result["steps"] == 60
    for path in ("own", "generic"):
        trained, random = result["trained"][path]["JF"], result["random"][path]["JF"]
        assert trained > random + 0.02, (path, trained, random)
