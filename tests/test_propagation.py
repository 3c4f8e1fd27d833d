"""Label propagation: windowed == dense, known motion is followed, context bookkeeping."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from hvc.benchmarks import read_benchmark
from hvc.metrics import evaluate_sequence, summarize
from hvc.model import build_encoder_for_propagation
from hvc.propagation import PropagationConfig, context_frames, predict_dense, predict_windowed, propagate_video


@pytest.mark.parametrize("radius,tile", [(0, 8), (3, 4), (5, 8), (12, 8), (12, 3)])
def test_windowed_equals_dense_on_random_features(radius, tile):
    torch.manual_seed(radius + tile)
    C, h, w = 16, 13, 21

    def feats():
        return F.normalize(torch.randn(C, h, w), dim=0)

    def labels():
        return torch.softmax(torch.randn(3, h, w), 0)

    first = (feats(), labels())
    previous = [(first[0], first[1], 4), (feats(), labels(), 1), (feats(), labels(), 1)]
    cfg = PropagationConfig(temperature=0.07, topk=7, radius=radius, tile=tile, query_chunk=50)
    q = feats()
    a = predict_windowed(q, first, previous, cfg)
    b = predict_dense(q, first, previous, cfg)
    assert a.shape == b.shape == (3, h, w)
    assert torch.allclose(a, b, atol=1e-5)


def test_context_frames_repeat_the_first_frame():
    assert context_frames(1, 3) == [(0, 3)]
    assert context_frames(2, 3) == [(0, 2), (1, 1)]
    assert context_frames(5, 3) == [(2, 1), (3, 1), (4, 1)]
    assert context_frames(5, 0) == []


def _textured(h, w, seed):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((h + 64, w + 64, 3)), sigma=(3, 3, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (255 * img).astype(np.uint8)


def test_known_translation_moves_the_mask():
    big = _textured(128, 160, 0)
    shift = 16
    frames = [big[32 : 32 + 128, 32 - k * shift // 2 : 32 - k * shift // 2 + 160] for k in range(3)]
    # the scene moves right by shift/2 px per frame; the object is a square of the texture
    mask0 = np.zeros((128, 160), np.uint8)
    mask0[40:88, 40:88] = 1
    torch.manual_seed(0)
    enc = build_encoder_for_propagation(None)
    cfg = PropagationConfig(topk=5, context=2, radius=6)
    pred = propagate_video(lambda x, layer: enc(x, layer), frames, mask0, cfg)
    for k in (1, 2):
        ys, xs = np.nonzero(pred[k] == 1)
        assert len(xs) > 0.5 * mask0.sum()
        assert xs.mean() - 63.5 == pytest.approx(k * shift / 2, abs=3)
        assert ys.mean() == pytest.approx(63.5, abs=3)
        expected = np.roll(mask0, k * shift // 2, axis=1)
        iou = ((pred[k] == 1) & (expected == 1)).sum() / ((pred[k] == 1) | (expected == 1)).sum()
        assert iou > 0.7


def test_windowed_and_dense_agree_on_real_davis_frames(davis2016_sample):
    video = read_benchmark("davis2016", davis2016_sample)[0]
    frames = [f for f in video.read_frames()[:5]]
    first = video.first_labels()
    torch.manual_seed(0)
    enc = build_encoder_for_propagation(None)
    cfg = PropagationConfig(context=3, radius=6, topk=10)
    kw = dict(resolution=160)
    windowed = propagate_video(lambda x, layer: enc(x, layer), frames, first, cfg, **kw)
    dense = propagate_video(lambda x, layer: enc(x, layer), frames, first, cfg, dense=True, **kw)
    assert (windowed == dense).mean() >= 0.999
    from hvc.io import read_mask

    gt = np.stack([read_mask(video.masks[i]) for i in range(5)])
    jf_windowed = summarize({"o": evaluate_sequence(gt, windowed)[1]})["JF_mean"]
    jf_dense = summarize({"o": evaluate_sequence(gt, dense)[1]})["JF_mean"]
    assert abs(jf_windowed - jf_dense) <= 0.001  # within 0.1 J&F points
    assert jf_windowed > 0.5  # the swan is tracked, not lost


def test_first_frame_must_not_be_empty():
    frames = [np.zeros((32, 32, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match="empty"):
        propagate_video(lambda x, layer: x, frames, np.zeros((32, 32), np.uint8), PropagationConfig())
