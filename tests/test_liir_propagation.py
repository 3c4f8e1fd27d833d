"""LIIR's propagation preset: reference frames, the compact affinity over several windows,
label copying, and the preset dispatched by the propagate stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hvc.config.params import Params, load_params, propagation_for
from hvc.methods.liir.inference import LIIRInference, joint_compact_affinity, propagate_video_liir
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
        b, _, h, w = x.shape  # features of the frame padded to the stride, as a LIIR encoder gives
        return 10 * torch.randn(1, 32, -(-h // 4), -(-w // 4), generator=g).expand(b, -1, -1, -1)


def test_static_video_keeps_its_labels_and_later_objects_are_pasted():
    H, W = 37, 50  # not multiples of 4: padded inside
    frame = np.zeros((H, W, 3), np.uint8)
    first = np.zeros((H, W), np.uint8)
    first[4:20, 8:28] = 1
    first[24:36, 30:48] = 2
    later = np.zeros((H, W), np.uint8)
    later[0:8, 40:50] = 3
    cfg = LIIRInference(radius_size=None)  # 14 cells, not scaled to the 37-pixel frame
    out = propagate_video_liir(PositionEncoder(), [frame] * 9, first, cfg, later_labels={4: later})
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


def test_window_radius_is_scaled_to_the_evaluated_resolution():
    cfg = LIIRInference()
    assert (cfg.radius, cfg.radius_size) == (14, 480)  # 56 pixels at 480p
    assert cfg.radius_at(480, 854) == 14
    assert cfg.radius_at(240, 427) == 7
    assert cfg.radius_at(60, 107) == 2  # 1/8 scale: 1.75 cells
    assert cfg.radius_at(8, 8) == 1  # never below one cell
    assert LIIRInference(radius_size=None).radius_at(60, 107) == 14
    # training pairs: 6 cells at 256 pixels
    from hvc.methods.liir.config import LIIRConfig

    train = LIIRConfig()
    assert [train.radius_at(6, s) for s in (256, 128, 64)] == [6, 3, 2]
    assert LIIRConfig(train_radius_size=None).radius_at(6, 64) == 6


def test_propagation_uses_the_scaled_radius(monkeypatch):
    import hvc.methods.liir.inference as lp

    seen = []
    real = lp._predict_frame
    monkeypatch.setattr(lp, "_predict_frame", lambda q, refs, cfg, radius: seen.append(radius) or real(q, refs, cfg, radius))
    frame = np.zeros((60, 107, 3), np.uint8)
    first = np.zeros((60, 107), np.uint8)
    first[10:30, 20:60] = 1
    propagate_video_liir(PositionEncoder(), [frame] * 2, first)
    propagate_video_liir(PositionEncoder(), [frame] * 2, first, LIIRInference(radius_size=None))
    assert seen == [2, 14]


def test_window_correlation_equals_the_training_window_logits_with_zeros_outside():
    from hvc.methods.liir.window import window_correlation

    torch.manual_seed(0)
    for h, w, radius, segment in [(7, 9, 3, 8), (7, 9, 3, 4), (5, 13, 2, 3), (4, 3, 5, 2), (6, 6, 0, 8)]:
        q, r = torch.randn(2, 8, h, w), torch.randn(2, 8, h, w)
        want, valid = window_logits(q, r, radius)
        got = window_correlation(q, r, radius, segment)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.all(got[:, ~valid] == 0)
        # one cell checked by hand: query (2, 1) against the reference cell at offset (-1, +1)
        if radius >= 1 and h > 2 and w > 2:
            p = 2 * radius + 1
            k = (radius - 1) * p + (radius + 1)
            assert torch.allclose(got[1, 2 * w + 1, k], (q[1, :, 2, 1] * r[1, :, 1, 2]).sum(), atol=1e-5)


def test_compaction_is_per_reference_window_on_a_hand_built_affinity():
    from hvc.methods.liir.inference import reference_compact_affinity

    p = 3
    g = lambda d2: math.exp(-4 * math.log(2) * d2)  # noqa: E731 (FWHM 1 cell)
    aff = torch.full((1, 3, p * p), 0.01)
    aff[0, 0, 4], aff[0, 0, 0] = 0.5, 0.2  # reference 0: peaks at the centre and a corner
    aff[0, 1, 8], aff[0, 1, 5] = 0.15, 0.12  # reference 1: its own peaks, top 0.15 > 0.1
    aff[0, 2, 2] = 0.05  # reference 2: top 0.05 <= 0.1, left as it is
    out = reference_compact_affinity(aff, 1)
    w0 = torch.tensor([0.5, 0.2]).softmax(0)
    w1 = torch.tensor([0.15, 0.12]).softmax(0)
    assert out[0, 0, 4] == pytest.approx(float(w0[0]) + float(w0[1]) * g(2))
    assert out[0, 0, 0] == pytest.approx(float(w0[1]) + float(w0[0]) * g(2))
    assert out[0, 1, 8] == pytest.approx(float(w1[0]) + float(w1[1]) * g(1))
    assert out[0, 1, 5] == pytest.approx(float(w1[1]) + float(w1[0]) * g(1))
    assert out[0, 1, 0] == pytest.approx(float(w1[0]) * g(8) + float(w1[1]) * g(5))
    assert torch.equal(out[0, 2], aff[0, 2])
    # the joint reading: both peaks in reference 0, the other windows become 0
    joint = joint_compact_affinity(aff.view(1, -1), p * p).view(1, 3, p * p)
    assert torch.allclose(joint[0, 0], out[0, 0])
    assert torch.all(joint[0, 1:] == 0)


def test_copy_labels_is_the_sum_of_each_reference_reconstruction():
    from hvc.methods.liir.inference import copy_labels
    from hvc.methods.liir.loss import reconstruct

    torch.manual_seed(1)
    h, w, radius = 5, 7, 2
    aff = torch.rand(h * w, 2, 25)
    labels = torch.rand(2, 3, h, w)
    want = sum(reconstruct(aff[:, k][None], labels[k][None], radius)[0] for k in range(2))
    assert torch.allclose(copy_labels(aff, labels, radius), want, atol=1e-5)


def test_an_854_wide_frame_goes_through_both_inference_paths():
    """DAVIS frames are 854 pixels wide, not a multiple of the LIIR stride 4: the encoder
    pads them (zeros in normalised Lab), in LIIR's own inference and in the generic one."""
    from hvc.eval.encoders import Renormalized
    from hvc.propagation import PropagationConfig, propagate_video
    from hvc.methods.liir.method import LIIR

    torch.manual_seed(0)
    spec = LIIR().encoder_spec()
    encoder = Renormalized(LIIR.load_encoder(None, spec), spec).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (30, 854, 3), dtype=np.uint8) for _ in range(3)]
    first = np.zeros((30, 854), np.uint8)
    first[5:25, 100:300] = 1
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 30, 854), "layer3").shape == (1, 64, 8, 214)
    own = propagate_video_liir(encoder, frames, first)
    generic = propagate_video(encoder, frames, first, PropagationConfig(topk=5, context=2, radius=4))
    for out in (own, generic):
        assert out.shape == (3, 30, 854) and out.dtype == np.uint8
        assert np.array_equal(out[0], first)
