"""Slow, real data: a short Mask-VOS training on the DAVIS 2016 sample's train videos beats
the same network at random initialisation on its 6 val sequences (J&F, plain label
propagation of the key features); the mask-embedded inference is scored too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _benchmark():
    spec = importlib.util.spec_from_file_location("maskvos_davis2016", ROOT / "benchmarks" / "maskvos_davis2016.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_maskvos_training_beats_its_random_initialisation(davis2016_sample):
    result = _benchmark().run(davis2016_sample, corr_steps=40, mask_steps=6, batch=4, mask_batch=1, size=64, scale=0.125, clusters=3)
    assert result["samples"] == 40 * 4 + 6
    trained, random = result["trained"], result["random"]
    assert trained["plain"]["JF"] > random["plain"]["JF"] + 0.02, (trained, random)  # measured: 19.0 against 14.6 (RESULTS.md)
    assert 0.0 <= trained["mask"]["JF"] <= 1.0 and 0.0 <= random["mask"]["JF"] <= 1.0
