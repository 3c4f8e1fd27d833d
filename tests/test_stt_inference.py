"""STT's own label propagation: the square-window top-k readout and the video loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hvc.methods.stt.inference import STTPropagation, predict_square, propagate_video_stt, square_mask


def reference_readout(query, keys, values, radius, topk, temperature):
    """Query by query: every context cell within the square, the top-k, softmax, weighted sum."""
    c, h, w = query.shape
    out = torch.zeros(values.shape[1], h * w)
    for n in range(h * w):
        y, x = divmod(n, w)
        cand = []
        for t in range(keys.shape[0]):
            for m in range(h * w):
                ky, kx = divmod(m, w)
                if radius == 0 or (abs(ky - y) <= radius and abs(kx - x) <= radius):
                    cand.append((float(keys[t, :, ky, kx] @ query[:, y, x]) / temperature, values[t, :, ky, kx]))
        cand.sort(key=lambda a: -a[0])
        top = cand[:topk]
        wts = torch.tensor([a for a, _ in top]).softmax(0)
        out[:, n] = sum(wt * v for wt, (_, v) in zip(wts, top))
    return out.view(-1, h, w)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_square_readout_matches_a_query_by_query_reference(radius):
    g = torch.Generator().manual_seed(radius)
    q = F.normalize(torch.randn(8, 5, 6, generator=g), dim=0)
    keys = F.normalize(torch.randn(3, 8, 5, 6, generator=g), dim=1)
    values = torch.rand(3, 2, 5, 6, generator=g)
    cfg = STTPropagation(radius=radius, topk=4, temperature=0.07, query_chunk=7)  # bands of one row
    got = predict_square(q, keys, values, cfg)
    assert torch.allclose(got, reference_readout(q, keys, values, radius, 4, 0.07), atol=1e-6)
    other_chunks = predict_square(q, keys, values, STTPropagation(radius=radius, topk=4, temperature=0.07, query_chunk=30))
    assert torch.allclose(got, other_chunks, atol=1e-6)


def test_square_window_is_square_and_excludes_far_matches():
    mask = square_mask(5, 5, torch.tensor([12]), 1).view(5, 5)
    assert mask.sum() == 9 and mask[1:4, 1:4].all()
    # a perfect match two cells away is ignored with radius 1, found with radius 2
    q = torch.zeros(2, 5, 5)
    q[0] = 1.0
    keys = torch.zeros(1, 2, 5, 5)
    keys[0, 1] = 1.0
    keys[0, :, 2, 4] = torch.tensor([1.0, 0.0])
    values = torch.zeros(1, 1, 5, 5)
    values[0, 0, 2, 4] = 1.0
    near = predict_square(q, keys, values, STTPropagation(radius=1, topk=1))
    far = predict_square(q, keys, values, STTPropagation(radius=2, topk=1))
    assert near[0, 2, 2] == 0 and far[0, 2, 2] == 1


class PositionEncoder(torch.nn.Module):
    """Features that identify the cell: each frame's cell matches only the same cell."""

    def forward(self, x: torch.Tensor, layer: str = "layer3") -> torch.Tensor:
        h, w = x.shape[-2] // 8, x.shape[-1] // 8
        return torch.eye(h * w).view(1, h * w, h, w)


def test_a_static_video_keeps_its_labels_and_later_objects_are_refused():
    labels = np.zeros((48, 64), np.uint8)
    labels[8:32, 16:40] = 1
    labels[32:48, 48:64] = 2
    frames = [np.full((48, 64, 3), 128, np.uint8)] * 25
    out = propagate_video_stt(PositionEncoder(), frames, labels, settings=STTPropagation(resolution=None, radius=2))
    assert len(out) == 25 and all(o.shape == labels.shape for o in out)
    assert all((o == labels).mean() > 0.97 for o in out[1:]), [(o == labels).mean() for o in out]
    with pytest.raises(ValueError, match="later_labels"):
        propagate_video_stt(PositionEncoder(), frames, labels, later_labels={3: labels})


def test_settings_follow_the_preset_and_the_benchmark():
    from hvc.methods.stt.inference import stt_settings

    davis = stt_settings("davis2017")
    assert (davis.topk, davis.context, davis.temperature, davis.radius, davis.resolution, davis.layer) == (10, 20, 0.07, 12, 480, "layer3")
    assert stt_settings("jhmdb").radius == 5 and stt_settings("vip", radius=3).radius == 3
    with pytest.raises(TypeError):
        stt_settings(window=3)
