"""Label propagation: windowed == dense, known motion is followed, context bookkeeping."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from hvc.eval.readers import read_benchmark
from hvc.eval.metrics import evaluate_sequence, summarize
from hvc.methods.hvc.model import build_encoder_for_propagation
from hvc.propagation import PropagationConfig, context_frames, predict_dense, predict_windowed, propagate_video


@pytest.mark.parametrize("radius,segment", [(0, 8), (1, 8), (2, 5), (3, 4), (5, 8), (12, 8), (12, 3), (4, 32)])
def test_windowed_equals_dense_on_random_features(radius, segment):
    torch.manual_seed(radius + segment)
    C, h, w = 16, 13, 21

    def feats():
        return F.normalize(torch.randn(C, h, w), dim=0)

    def labels():
        return torch.softmax(torch.randn(3, h, w), 0)

    first = (feats(), labels())
    previous = [(first[0], first[1], 4), (feats(), labels(), 1), (feats(), labels(), 1)]
    q = feats()
    b = predict_dense(q, first, previous, PropagationConfig(temperature=0.07, topk=7, radius=radius, query_chunk=50))
    assert b.shape == (3, h, w)
    # one segment per chunk, and every segment in one chunk (the last one partial: 21 = 2 * 8 + 5)
    for chunk in (50, 10**6):
        cfg = PropagationConfig(temperature=0.07, topk=7, radius=radius, segment=segment, query_chunk=chunk)
        assert torch.equal(predict_windowed(q, first, previous, cfg), b)


def _near_ties(protos, h, w, generator):
    """(C, h, w) unit features drawn from the (P, C) prototypes, a third of the cells
    nudged by ~1e-7 (near-ties), the rest exact copies (exact ties within and across frames)."""
    f = protos[torch.randint(0, len(protos), (h * w,), generator=generator)]
    nudge = torch.rand(h * w, generator=generator) < 1 / 3
    f[nudge] += 1e-7 * torch.randn(int(nudge.sum()), protos.shape[1], generator=generator)
    return F.normalize(f, dim=1).T.reshape(-1, h, w).contiguous()


@pytest.mark.parametrize("radius,segment,topk", [(0, 8, 7), (3, 4, 5), (5, 8, 7), (12, 8, 15), (12, 3, 4)])
def test_windowed_and_dense_are_bit_identical_on_near_ties(radius, segment, topk):
    """Affinities that tie exactly or differ by float rounding only: both paths keep the
    same k candidates and give the same soft labels to the last bit."""
    g = torch.Generator().manual_seed(100 * radius + segment)
    C, h, w = 32, 13, 21
    protos = F.normalize(torch.randn(128, C, generator=g), dim=1)  # tie groups of ~10 candidates

    def labels():
        return torch.softmax(4 * torch.randn(3, h, w, generator=g), 0)

    first = (_near_ties(protos, h, w, g), labels())
    previous = [(first[0], first[1], 3)] + [(_near_ties(protos, h, w, g), labels(), 1) for _ in range(3)]
    cfg = PropagationConfig(temperature=0.1, topk=topk, radius=radius, segment=segment, query_chunk=64)
    for _ in range(3):
        q = _near_ties(protos, h, w, g)
        a = predict_windowed(q, first, previous, cfg)
        b = predict_dense(q, first, previous, cfg)
        assert torch.equal(a, b), f"{(a != b).any(0).sum().item()} cells differ, largest by {(a - b).abs().max().item():.3g}"
        assert torch.equal(a, predict_dense(q, first, previous, PropagationConfig(**{**cfg.__dict__, "query_chunk": 7})))


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
    assert np.array_equal(windowed, dense)  # identical masks, not just close
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


# --------------------------------------------------------------------------- objects appearing after frame 0


def _new_objects_benchmark():
    """benchmarks/new_objects.py as a module (its YouTube-VOS-layout video generator)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "new_objects.py"
    spec = importlib.util.spec_from_file_location("new_objects_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_branches(feats, first, later, k, n, radius, temperature):
    """The official definition, literally and densely: one branch per frame where objects
    first appear (and frame 0); branch t0 predicts frame t from [t0] (every cell) +
    [max(t0, t - n + i) for i < n] (cells strictly within the radius), top-k, softmax,
    weighted labels; the merged prediction sums each branch over the channels it owns;
    at frame t the new objects' labels blend in as (1 - s) * pred + s * labels."""
    C, h, w = feats[0].shape
    L = first.shape[0]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1)
    near = ((pos[:, None] - pos[None]) ** 2).sum(-1) < radius**2
    soft = {0: first}
    owned = {0: first.flatten(1).sum(1) > 0}
    known = owned[0].clone()

    def branch(t, t0):
        ctx = [t0] + [max(t0, t - n + i) for i in range(n)]
        q = feats[t].reshape(C, -1).T
        blocks = []
        for i, j in enumerate(ctx):
            a = q @ feats[j].reshape(C, -1)
            blocks.append(a if i == 0 else a.masked_fill(~near, float("-inf")))
        aff = torch.cat(blocks, 1)
        labels = torch.cat([soft[j].reshape(L, -1).T for j in ctx])
        vals, idx = aff.topk(k, dim=1)
        weights = torch.softmax(vals / temperature, dim=1)
        return (weights[..., None] * labels[idx]).sum(1).T.reshape(L, h, w)

    out = {}
    for t in range(1, len(feats)):
        pred = sum(owned[t0].float().view(-1, 1, 1) * branch(t, t0) for t0 in owned)
        if t in later:
            ids = (later[t].flatten(1).sum(1) > 0) & ~known
            ids[0] = False
            new = later[t] * ids.float().view(-1, 1, 1)
            s = new.sum(0, keepdim=True)
            pred = (1 - s) * pred + s * new
            owned[t], known = ids, known | ids
        soft[t] = out[t] = pred
    return out


@pytest.mark.parametrize("topk,context,radius", [(15, 50, 12), (5, 3, 6)])
def test_an_object_appearing_later_gets_its_own_branch(tmp_path, topk, context, radius):
    from hvc.eval.readers import read_ytvos
    from hvc.propagation import encode, labels_to_onehot, preprocess, propagate_soft, resize_labels

    bench = _new_objects_benchmark()
    appear = 3
    _, gt = bench.make_video(tmp_path, frames=8, appear=appear)
    video = read_ytvos(tmp_path, "valid")[0]
    assert sorted(video.later_labels()) == [appear]
    torch.manual_seed(0)
    enc = build_encoder_for_propagation(None)
    encoder = lambda x, layer: enc(x, layer)  # noqa: E731
    cfg = PropagationConfig(topk=topk, context=context, radius=radius, temperature=0.1)
    frames = video.read_frames()

    # the new object is tracked after it appears (the shared-reference reading lost it:
    # 0-4 pixels per frame at the official settings)
    pred = propagate_video(encoder, frames, video.first_labels(), cfg, later_labels=video.later_labels())
    ious = [((pred[t] == 2) & (gt[t] == 2)).sum() / ((pred[t] == 2) | (gt[t] == 2)).sum() for t in range(appear + 1, 8)]
    assert min(ious) > 0.1 and np.mean(ious) > 0.3, f"the new object is lost: IoU {ious}"
    assert (pred[appear] == gt[appear])[gt[appear] == 2].all()

    # and the prediction is exactly the branch-per-reference definition on the same features
    feats = [encode(encoder, preprocess(f, None), "layer3") for f in frames]
    hw = tuple(feats[0].shape[-2:])
    soft = lambda m: resize_labels(labels_to_onehot(m, 2), hw)  # noqa: E731
    first, later = soft(video.first_labels()), {t: soft(m) for t, m in video.later_labels().items()}
    expected = _reference_branches(feats, first, later, topk, context, radius, 0.1)
    for dense in (False, True):
        got = dict(propagate_soft((feats[0], first), feats[1:], cfg, later, dense=dense))
        assert sorted(got) == sorted(expected)
        for t in expected:
            assert torch.allclose(got[t], expected[t], atol=1e-5), f"frame {t}, dense={dense}"
