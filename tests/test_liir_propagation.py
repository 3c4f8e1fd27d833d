"""LIIR's propagation preset: reference frames, the compact affinity over several windows,
label copying, and the preset dispatched by the propagate stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hvc.config.params import Params, load_params, propagation_for
from hvc.methods.liir.inference import LIIRInference, joint_compact_affinity, local_logits, propagate_video_liir
from hvc.methods.liir.loss import compact_affinity, window_logits
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reference_frames_are_0_5_and_t_minus_5_3_1():
    cfg = LIIRInference()
    assert cfg.reference_frames(1) == [0]
    assert cfg.reference_frames(3) == [0, 2]
    assert cfg.reference_frames(6) == [0, 5, 1, 3]
    assert cfg.reference_frames(20) == [0, 5, 15, 17, 19]
    assert (cfg.radius, cfg.stride, cfg.compact_threshold) == (14, 4, 0.1)


def test_liir_encoders_get_radius_14_an_explicit_radius_wins_and_other_encoders_keep_theirs():
    p = load_params(ROOT / "params.yaml", {"method": "liir"})
    assert propagation_for(p, "liir").radius == 14 and propagation_for(p, "hvc").radius == 12
    p = load_params(ROOT / "params.yaml", {"method": "liir", "propagation": {"radius": 6}})
    assert propagation_for(p, "liir").radius == 6
    p = load_params(ROOT / "params.yaml", {"propagation": {"preset": "crw"}})  # a generic preset's radius wins too
    assert propagation_for(p, "liir").radius == 12


def test_joint_compact_affinity_puts_gaussians_at_the_two_peaks_of_any_window():
    p = 3
    row = torch.full((1, 2 * p * p), 0.01)
    row[0, 4] = 0.5  # window 0, centre cell (1, 1)
    row[0, p * p + 0] = 0.3  # window 1, corner cell (0, 0)
    low = torch.full((1, 2 * p * p), 1 / 18)  # top value 0.056 < 0.1: unchanged
    out = joint_compact_affinity(torch.cat([row, low]), p * p)
    w = torch.tensor([0.5, 0.3]).softmax(0)
    g = lambda d2: math.exp(-4 * math.log(2) * d2)  # noqa: E731 (FWHM 1 cell)
    assert out[0, 4] == pytest.approx(float(w[0]))
    assert out[0, 3] == pytest.approx(float(w[0]) * g(1))
    assert out[0, p * p] == pytest.approx(float(w[1]))
    assert out[0, p * p + 4] == pytest.approx(float(w[1]) * g(2))
    assert torch.equal(out[1], low[0])
    # one window: the same as the training-time compact affinity of hvc.methods.liir.loss
    single = torch.rand(5, 25).softmax(-1) ** 3
    single = single / single.sum(-1, keepdim=True)
    assert torch.allclose(joint_compact_affinity(single, 25), compact_affinity(single, 2))


class PositionEncoder(torch.nn.Module):
    """Features that name the position (a fixed random 32-d code per stride-4 cell, scaled):
    every frame matches itself, so propagation through a static video copies the labels."""

    def forward(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        b, _, h, w = x.shape
        return 10 * torch.randn(1, 32, h // 4, w // 4, generator=g).expand(b, -1, -1, -1)


def test_static_video_keeps_its_labels_and_later_objects_are_pasted():
    H, W = 37, 50  # not multiples of 4: padded inside
    frame = np.zeros((H, W, 3), np.uint8)
    first = np.zeros((H, W), np.uint8)
    first[4:20, 8:28] = 1
    first[24:36, 30:48] = 2
    later = np.zeros((H, W), np.uint8)
    later[0:8, 40:50] = 3
    out = propagate_video_liir(PositionEncoder(), [frame] * 9, first, later_labels={4: later})
    assert out.shape == (9, H, W) and out.dtype == np.uint8
    assert np.array_equal(out[0], first)
    for t in range(1, 4):
        agree = (out[t] == first).mean()
        assert agree > 0.97, (t, agree)  # borders move by at most the 4-px label grid
    assert np.all(out[4][later == 3] == 3)
    # frame 5 reads frames 0, 2 and 4 with equal affinities: two of three references vote background
    assert (out[5] == 3).sum() == 0
    with pytest.raises(ValueError, match="empty"):
        propagate_video_liir(PositionEncoder(), [frame] * 2, np.zeros((H, W), np.uint8))


def test_predict_dispatches_the_liir_preset(monkeypatch, tmp_path):
    import hvc.methods.liir.inference as lp
    import hvc.eval.predict as predict

    calls = []

    def fake(encode, frames, first, cfg, later, device):
        calls.append(cfg)
        return np.stack([first] * len(frames))

    monkeypatch.setattr(lp, "propagate_video_liir", fake)

    class V:
        name, frames = "v", [tmp_path / "00000.jpg", tmp_path / "00001.jpg"]

        def first_labels(self):
            return np.ones((8, 8), np.uint8)

        def later_labels(self):
            return {}

    p = Params().model_copy(update={"method": "liir", "propagation": Params().propagation.model_copy(update={"radius": 14})})
    infer = predict._method_inference(p, "liir", "vos")
    assert predict._method_inference(p, "hvc", "vos") is None and predict._method_inference(p, "liir", "pose") is None
    predict._propagate_video(p, "vos", None, V(), [np.zeros((8, 8, 3), np.uint8)] * 2, torch.device("cpu"), tmp_path, infer)
    assert calls and calls[0].radius == 14
    assert (tmp_path / "v" / "00001.png").is_file()


def test_local_logits_equal_the_training_window_logits():
    torch.manual_seed(0)
    q, r = torch.randn(1, 8, 7, 9), torch.randn(1, 8, 7, 9)
    want, want_valid = window_logits(q, r, 3)
    got, valid = local_logits(q[0], r[0], 3)
    assert torch.equal(valid, want_valid)
    assert torch.allclose(got[valid], want[0][want_valid], atol=1e-5)
