"""Slow, real data: a short STT training (spatial phase on the frames as images, then the
temporal phase on frame pairs) on the DAVIS 2016 sample's train videos beats the same
network at random initialisation on its 6 val sequences (J&F, STT's own inference), through
the harness's training loop (``benchmarks/davis2016_compare.py``). Measured on a loaded
2-core CPU (load 8-11): 1,270 s, of which training 414 s; at load about 3: 34 s
(benchmarks/RESULTS.md)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_short_stt_training_beats_its_random_initialisation(davis2016_sample, davis_compare, tmp_path):
    videos = davis_compare.val_sequences(davis2016_sample, scale=0.125)
    assert len(videos) == 6
    result = davis_compare.run("stt", samples=240, batch=8, size=64, out=tmp_path, videos=videos, sample=davis2016_sample, only=["own"])
    assert [(ph["name"], ph["steps"]) for ph in result["phases"]] == [("spatial", 15), ("temporal", 15)]
    trained, random = result["trained"]["own"], result["random"]["own"]
    assert not trained["degenerate"]
    assert trained["JF"] > random["JF"] + 0.02, (trained, random)
