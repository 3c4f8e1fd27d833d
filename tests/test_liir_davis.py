"""Slow, real data: a short LIIR training on the DAVIS 2016 sample's train videos beats the
same network at random initialisation on its 6 val sequences (J&F), through LIIR's own
inference and through the generic label propagation (``benchmarks/davis2016_compare.py``)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_short_liir_training_beats_its_random_initialisation(davis2016_sample, davis_compare, tmp_path):
    videos = davis_compare.val_sequences(davis2016_sample, scale=0.125)
    assert len(videos) == 6
    result = davis_compare.run("liir", samples=480, batch=8, size=64, out=tmp_path, videos=videos, sample=davis2016_sample)
    assert result["steps"] == 60
    for path in ("own", "generic"):
        trained, random = result["trained"][path]["JF"], result["random"][path]["JF"]
        assert trained > random + 0.02, (path, trained, random)
