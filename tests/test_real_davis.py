"""Real DAVIS 2016 val sequences (../shared/data/davis2016-sample): propagate, then score.

Skips with a message when the sample folder is absent (a user's clone has none).
"""

import numpy as np
import pytest

from hvc.benchmarks import read_benchmark
from hvc.evaluate import evaluate_benchmark, propagate_benchmark
from hvc.io import read_mask, write_mask
from hvc.params import Params

pytestmark = pytest.mark.slow


def small_params():
    p = Params()
    p.device = "cpu"
    p.propagation.resolution = 240  # 240 x 427 input: a 30 x 54 feature map
    p.propagation.context = 5
    p.propagation.radius = 8
    return p


def test_propagate_and_score_the_six_val_sequences(davis2016_sample, tmp_path):
    p = small_params()
    videos = read_benchmark("davis2016", davis2016_sample)
    assert sorted(v.name for v in videos) == ["blackswan", "car-shadow", "dog", "kite-surf", "libby", "scooter-black"]
    info = propagate_benchmark(p, "random", "davis2016", davis2016_sample, tmp_path / "pred")
    assert info["videos"] == 6 and info["frames"] == sum(len(v.frames) - 1 for v in videos)
    scores, per_object = evaluate_benchmark(p, "davis2016", davis2016_sample, tmp_path / "pred", tmp_path / "s.json")
    assert len(per_object) == 6
    assert 0.3 < scores["JF_mean"] < 1.0  # a random encoder tracks, imperfectly

    # ground truth as prediction scores exactly 1; shifting it scores lower
    for v in videos:
        for i, path in v.masks.items():
            gt = read_mask(path)
            write_mask(tmp_path / "gt" / v.name / f"{path.stem}.png", gt)
            write_mask(tmp_path / "shifted" / v.name / f"{path.stem}.png", np.roll(gt, 25, axis=1))
    perfect, _ = evaluate_benchmark(p, "davis2016", davis2016_sample, tmp_path / "gt", None)
    shifted, _ = evaluate_benchmark(p, "davis2016", davis2016_sample, tmp_path / "shifted", None)
    assert perfect["JF_mean"] == 1.0 and perfect["J_mean"] == 1.0 and perfect["F_mean"] == 1.0
    assert shifted["JF_mean"] < 0.9
