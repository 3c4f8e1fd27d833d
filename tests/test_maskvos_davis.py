"""Slow, real data: a short Mask-VOS training (correspondence warm-up, then the mask stage)
on the DAVIS 2016 sample's train videos beats the same network at random initialisation on
its 6 val sequences (J&F, the generic label propagation of the key features), through the
harness's training loop (``benchmarks/davis2016_compare.py``); the mask-embedded inference
(the method's own, with the modules the training saved) is scored too."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_short_maskvos_training_beats_its_random_initialisation(davis2016_sample, davis_compare, tmp_path):
    videos = davis_compare.val_sequences(davis2016_sample, scale=0.125)
    assert len(videos) == 6
    # 46 steps of 4 clips: 40 warm-up steps, then 6 mask steps of one clip each
    section = {"corr_share": 40 / 46, "batch_mask": 1}
    result = davis_compare.run("maskvos", samples=184, batch=4, size=64, out=tmp_path, videos=videos, sample=davis2016_sample, section=section)
    assert [(ph["name"], ph["steps"]) for ph in result["phases"]] == [("correspondence", 40), ("mask", 6)]
    assert result["samples"] == 40 * 4 + 6
    print(davis_compare.table([result]))  # the figures of benchmarks/RESULTS.md, in the log
    trained, random = result["trained"], result["random"]
    assert trained["generic"]["JF"] > random["generic"]["JF"] + 0.02, (trained, random)
    for init in (trained, random):  # the decoder trained for 6 steps only: scored, not yet better
        assert 0.0 <= init["own"]["JF"] <= 1.0
