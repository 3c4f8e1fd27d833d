"""Real DAVIS 2016 val sequences (../shared/data/davis2016-sample): propagate, then score.

Skips with a message when the sample folder is absent (a user's clone has none). Ground
truth scored as prediction (J&F exactly 1) and shifted, eroded or dilated masks (lower,
equal to the definition) are tested on the same data in tests/test_metrics.py.
"""

import pytest

from hvc.benchmarks import read_benchmark
from hvc.evaluate import evaluate_benchmark, propagate_benchmark
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
    assert 0.2 < scores["JF_mean"] < 1.0  # a random encoder tracks, imperfectly (30.4 J&F here)
