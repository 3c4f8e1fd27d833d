"""LIIR components (hvc/methods/liir): encoder shapes, position shifting, windowed
reconstruction, memory-bank negatives, compactness prior, colour dropout, a tiny training run."""

from __future__ import annotations

import math

import pytest
import torch

from hvc.inputs import normalize_input
from hvc.methods.base import EncoderSpec
from hvc.methods.liir.colour import drop_colour_channel
from hvc.methods.liir.config import PHASE1, PHASE2, LIIRConfig
from hvc.methods.liir.loss import (
    MemoryBank,
    compact_affinity,
    compact_target,
    compactness_loss,
    inter_intra_affinity,
    negative_logits,
    reconstruct,
    window_logits,
    window_softmax,
)
from hvc.methods.liir.method import LIIR, PairTransform
from hvc.methods.liir.model import LIIREncoder, shift_position


def test_encoder_shapes_at_stride_4():
    enc = LIIREncoder()
    x = torch.randn(2, 3, 32, 48)
    assert enc(x).shape == (2, 64, 8, 12)
    assert enc(x, "layer4").shape == (2, 256, 8, 12)
    trunk = enc.feature_extraction
    stem = trunk.relu(trunk.bn1(trunk.conv1(x)))
    assert stem.shape == (2, 64, 16, 24)  # P is added here (stride 2)
    assert trunk.layer1(stem).shape == (2, 64, 16, 24)
    assert trunk.layer2(trunk.layer1(stem)).shape == (2, 128, 8, 12)
    with pytest.raises(ValueError, match="multiples of 4"):
        trunk(torch.randn(1, 3, 30, 32))  # the trunk alone does not pad
    # the encoder pads to the stride with zeros at the bottom and right (854-wide DAVIS frames)
    enc.eval()
    odd = torch.randn(1, 3, 30, 854)
    padded = torch.nn.functional.pad(odd, (0, 2, 0, 2))
    assert enc(odd).shape == (1, 64, 8, 214)
    assert torch.equal(enc(odd), enc(padded))
    with pytest.raises(ValueError, match="layer"):
        enc(x, "layer3")


def test_position_shifting_rolls_the_encoding_and_blocks_its_gradient():
    torch.manual_seed(0)
    enc = LIIREncoder().eval()
    with torch.no_grad():
        enc.feature_extraction.pos_embed1.normal_()
    pos = enc.feature_extraction.pos_embed1
    shifted = shift_position(pos, 5, -7)
    assert torch.equal(shifted, torch.roll(pos.detach(), (5, -7), (-2, -1)))
    assert not torch.equal(shifted, pos.detach())
    assert not shifted.requires_grad

    x = torch.randn(1, 3, 32, 32)  # P is rolled on its 128 x 128 grid, then resized
    out = enc(x, shift=(5, -7))
    # the same as running with P replaced by its rolled copy
    ref = LIIREncoder().eval()
    ref.load_state_dict(enc.state_dict())
    with torch.no_grad():
        ref.feature_extraction.pos_embed1.copy_(shifted)
    assert torch.allclose(out, ref(x), atol=1e-5)
    assert not torch.allclose(out, enc(x), atol=1e-3)

    out.square().sum().backward()
    assert pos.grad is None  # no gradient through the shifted P
    assert enc.feature_extraction.conv1.weight.grad.abs().sum() > 0
    enc.zero_grad()
    enc(x).square().sum().backward()  # the unshifted P is trained normally
    assert pos.grad is not None and pos.grad.abs().sum() > 0


def test_window_logits_match_direct_dot_products():
    torch.manual_seed(1)
    q, r = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    radius, p = 2, 5
    logits, valid = window_logits(q, r, radius)
    assert logits.shape == (2, 42, 25) and valid.shape == (42, 25)
    for y, x, ky, kx in [(0, 0, 2, 2), (3, 4, 0, 1), (5, 6, 4, 3), (2, 1, 1, 4), (0, 6, 0, 0)]:
        n, k = y * 7 + x, ky * p + kx
        yy, xx = y + ky - radius, x + kx - radius
        inside = 0 <= yy < 6 and 0 <= xx < 7
        assert bool(valid[n, k]) == inside
        want = (q[:, :, y, x] * r[:, :, yy, xx]).sum(1) if inside else torch.zeros(2)
        assert torch.allclose(logits[:, n, k], want, atol=1e-5)
    a = window_softmax(logits, valid)
    assert torch.allclose(a.sum(-1), torch.ones(2, 42), atol=1e-6)
    assert (a[:, ~valid] == 0).all()


def test_identity_affinity_reconstructs_the_reference_labels():
    torch.manual_seed(2)
    labels = torch.rand(2, 3, 6, 5)
    radius, p = 3, 7
    identity = torch.zeros(2, 30, p * p)
    identity[:, :, radius * p + radius] = 1.0  # all weight on the zero offset
    assert torch.allclose(reconstruct(identity, labels, radius), labels)
    # one cell to the right: each pixel copies its right neighbour (0 past the border)
    right = torch.zeros(2, 30, p * p)
    right[:, :, radius * p + radius + 1] = 1.0
    out = reconstruct(right, labels, radius)
    assert torch.allclose(out[..., :-1], labels[..., 1:]) and (out[..., -1] == 0).all()


def test_same_video_negatives_are_excluded():
    bank = MemoryBank(frames=4, points=2, channels=3)
    q = torch.ones(2, 3, 2, 2)  # queries of video 7 (row 0) and video 9 (row 1)
    strong = torch.full((1, 2, 3), 5.0)  # dot product 15 with every query
    bank.push(strong, torch.tensor([7]))
    feats, valid = bank.negatives(torch.tensor([7, 9]))
    assert feats.shape == (8, 3)
    # slot 0 is video 7: not a negative of clip 0, a negative of clip 1; empty slots never
    assert valid.tolist() == [[False] * 8, [True, True] + [False] * 6]

    logits, wvalid = window_logits(q, q, 1)
    intra = window_softmax(logits, wvalid)
    inter = inter_intra_affinity(logits, wvalid, negative_logits(q, feats), valid)
    assert torch.allclose(inter[0], intra[0])  # own-video bank entry: no contribution
    assert (inter[1].sum(-1) < 0.01).all()  # other video's strong match takes the mass
    assert torch.allclose(inter[1] / inter[1].sum(-1, keepdim=True), intra[1], atol=1e-5)

    bank.push(torch.zeros(4, 2, 3), torch.tensor([1, 2, 3, 4]))  # FIFO: overwrites slot 0
    assert bank.video_ids.tolist() == [4, 1, 2, 3] and int(bank.pointer) == 1


def test_compactness_target_of_known_top2_peaks():
    radius, p = 3, 7
    a = torch.full((p * p,), 0.1 / 47)
    a[2 * p + 3] = 0.6  # top-1 at row 2, column 3
    a[4 * p + 1] = 0.3  # top-2 at row 4, column 1
    target, top = compact_target(a, radius)
    w1 = math.exp(0.6) / (math.exp(0.6) + math.exp(0.3))
    w2 = 1.0 - w1
    g = lambda d2: 2.0 ** (-4.0 * d2)  # FWHM 1: exp(-4 ln2 d²)
    assert top.item() == pytest.approx(0.6)
    assert target[2 * p + 3].item() == pytest.approx(w1 + w2 * g(8))
    assert target[4 * p + 1].item() == pytest.approx(w2 + w1 * g(8))
    assert target[2 * p + 4].item() == pytest.approx(w1 / 16 + w2 * g(13))  # one cell right of peak 1
    assert target[0].item() == pytest.approx(w1 * g(13) + w2 * g(17))
    # gradient into A only; rows below the gate do not count
    a2 = a.clone().requires_grad_(True)
    compactness_loss(a2[None], radius).backward()
    assert a2.grad.abs().sum() > 0
    assert compactness_loss(a[None] * 0.5, radius, gate=0.5) == 0  # top 0.3 < 0.5
    # test time: Ã replaces A only where the top value exceeds the threshold
    both = torch.stack([a, torch.full((p * p,), 1.0 / 49)])
    out = compact_affinity(both, radius)
    assert torch.allclose(out[0], target) and torch.equal(out[1], both[1])


def test_colour_dropout_targets_the_dropped_channel():
    frames = torch.randn(2, 2, 3, 8, 8)
    inputs, target, ch = drop_colour_channel(frames, channel=2)
    assert ch == 2 and torch.equal(target, frames[:, :, 2:3])
    assert (inputs[:, :, 2] == 0).all()
    assert torch.allclose(inputs[:, :, :2], frames[:, :, :2] * 1.5)
    chans = {drop_colour_channel(frames, generator=torch.Generator().manual_seed(s))[2] for s in range(20)}
    assert chans == {1, 2}
    with pytest.raises(ValueError, match="1 \\(a\\) or 2 \\(b\\)"):
        drop_colour_channel(frames, channel=0)


def test_phase_schedules_follow_the_sources():
    cfg = LIIRConfig()
    assert (PHASE1.epochs, PHASE1.lr, PHASE1.batch_size, PHASE1.inter, PHASE1.compact) == (30, 1e-3, 32, False, False)
    assert (PHASE2.epochs, PHASE2.lr, PHASE2.batch_size, PHASE2.inter, PHASE2.compact) == (5, 1e-4, 12, True, True)
    assert (cfg.bank_frames, cfg.bank_points, cfg.train_radius, cfg.test_radius) == (1440, 4, 6, 14)
    assert [PHASE1.lr_factor(s) for s in (0, 400_000, 400_001, 700_000, 2_000_000)] == [1.0, 1.0, 0.5, 0.25, 0.0625]
    assert [PHASE2.lr_factor(s) for s in (55_000, 60_000, 300_001)] == [1.0, 0.9, 0.0625]
    m = LIIR(cfg, phase=2, batch_size=12)
    assert m.lr_at(5000, 10_000, 1e-4) == pytest.approx(0.9e-4)  # 60,000 samples
    with pytest.raises(ValueError, match="phase"):
        LIIR(cfg, phase=3)


def _moving_square_clips(batch: int, size: int, gap: int, gen: torch.Generator) -> torch.Tensor:
    """(B, 2, 3, S, S) uint8: a coloured square on a coloured background, moved by up to
    ``gap`` pixels between the two frames."""
    clips = torch.empty(batch, 2, 3, size, size, dtype=torch.uint8)
    side = size // 3
    for b in range(batch):
        bg, fg = torch.randint(0, 256, (3,), generator=gen), torch.randint(0, 256, (3,), generator=gen)
        y, x = (int(v) for v in torch.randint(gap, size - side - gap, (2,), generator=gen))
        dy, dx = (int(v) for v in torch.randint(-gap, gap + 1, (2,), generator=gen))
        for t, (yy, xx) in enumerate([(y, x), (y + dy, x + dx)]):
            clips[b, t] = bg[:, None, None]
            clips[b, t, :, yy : yy + side, xx : xx + side] = fg[:, None, None]
    return clips


def test_tiny_synthetic_run_lowers_the_loss():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    frames = normalize_input(_moving_square_clips(4, 16, 2, gen), "lab")
    cfg = LIIRConfig(bank_frames=6, train_radius=2)
    method = LIIR(cfg, phase=1, batch_size=4)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def loss_now() -> float:
        torch.manual_seed(123)  # same dropped channel each time
        with torch.no_grad():
            return float(method.loss({"frames": frames})["loss"])

    before = loss_now()
    for step in range(6):
        out = method.loss({"frames": frames})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert method.after_step(step, 6) == {}
    after = loss_now()
    assert after < 0.7 * before, (before, after)

    # phase 2 from the phase-1 weights: bank fills with other videos, all terms finite
    method2 = LIIR(cfg, phase=2, batch_size=4)
    method2.load_state_dict(method.state_dict())
    ids = torch.arange(4)
    negatives = []
    for step in range(2):
        stored = method2.bank.video_ids[method2.bank.filled]
        out = method2.loss({"frames": frames, "video_id": ids})
        assert set(out) == {"loss", "rec", "compact", "negatives"}
        assert all(torch.isfinite(v) for v in out.values())
        want = sum(int((stored != i).sum()) for i in ids) * cfg.bank_points / len(ids)
        negatives.append(float(out["negatives"]))
        assert negatives[-1] == pytest.approx(want)
        out["loss"].backward()
        method2.after_step(step, 2)
    assert negatives[0] == 0 and negatives[1] > 0  # bank empty at first, then other videos
    assert int(method2.bank.filled.sum()) == 6  # FIFO: 2 pushes of 4 frames into 6 slots
    with pytest.raises(ValueError, match="video_id"):
        method2.loss({"frames": frames})


def test_pair_transform_and_encoder_round_trip():
    cfg = LIIRConfig(image_size=32)
    clip = (torch.arange(9) * 25).to(torch.uint8)[:, None, None, None].expand(9, 3, 40, 48).contiguous()  # frame t grey 25t
    lab = normalize_input(clip[:, :, :1, :1], "lab")[:, 0, 0, 0]  # normalised L of each frame
    gaps = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = PairTransform(cfg)(clip)["frames"]
        assert out.shape == (2, 3, 32, 32)
        assert torch.allclose(out[0, 0], lab[0].expand(32, 32), atol=1e-4)  # reference = frame 0
        gaps |= {int(g) for g in range(9) if torch.allclose(out[1, 0], lab[g].expand(32, 32), atol=1e-4)}
    assert gaps == {2, 5, 8}
    with pytest.raises(ValueError, match="clips"):
        PairTransform(cfg)(clip[:5])
    method = LIIR(cfg)
    spec = method.encoder_spec()
    assert (spec.colour_space, spec.stride, spec.default_layer) == ("lab", 4, "post_conv")
    enc = LIIR.load_encoder(method.encoder().state_dict(), EncoderSpec.from_dict(spec.to_dict()))
    assert not enc.training
    x = torch.randn(1, 3, 32, 32)
    method.eval()
    assert torch.allclose(enc(x), method.encoder()(x))
    with pytest.raises(ValueError, match="does not fit"):
        LIIR.load_encoder({"bogus": torch.zeros(1)}, spec)


def test_key_encoder_is_copied_then_averaged():
    method = LIIR(LIIRConfig(bank_frames=4), phase=2)
    with torch.no_grad():
        method.online.post_convolution.bias.fill_(1.0)
    method.update_key(0.9)  # first call: copy (phase 2 starts from phase-1 weights)
    assert torch.equal(method.key.post_convolution.bias, method.online.post_convolution.bias)
    with torch.no_grad():
        method.online.post_convolution.bias.fill_(3.0)
    method.update_key(0.9)
    assert torch.allclose(method.key.post_convolution.bias, torch.full((64,), 0.9 * 1.0 + 0.1 * 3.0))
    assert not any(p.requires_grad for p in method.key.parameters())


@pytest.mark.parametrize("design,border", [("paper", "mask"), ("paper", "zero"), ("code", "mask"), ("code", "zero")])
def test_each_phase2_design_trains_and_lowers_the_loss(design, border):
    """Phase 2 as the paper (A′ on the stride-4 features replaces A) and as the code (A on
    stride 4 at weight 1, A′ on a stride-8 head at weight 0.5), with either border handling:
    8 steps on one batch lower its loss, against a bank of other videos held fixed."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    frames = normalize_input(_moving_square_clips(4, 32, 2, gen), "lab")
    others = normalize_input(_moving_square_clips(4, 32, 2, gen), "lab")
    method = LIIR(LIIRConfig(bank_frames=8, phase2_design=design, train_border=border), phase=2, batch_size=4)
    ids = torch.arange(4)
    with torch.no_grad():  # fill the bank with two batches of other videos, then hold it
        for k in (100, 200):
            method.loss({"frames": others, "video_id": ids + k})
            method.after_step(0, 1)
    assert int(method.bank.filled.sum()) == 8
    method.bank.push = lambda *args: None
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    want = {"loss", "rec", "compact", "negatives"} | ({"rec_inter"} if design == "code" else set())

    def loss_now() -> float:
        torch.manual_seed(123)  # same dropped channel each time
        with torch.no_grad():
            out = method.loss({"frames": frames, "video_id": ids})
        assert set(out) == want and all(torch.isfinite(v) for v in out.values())
        assert float(out["negatives"]) == 8 * cfg_points(method)
        return float(out["loss"])

    before = loss_now()
    for step in range(8):
        torch.manual_seed(123)
        out = method.loss({"frames": frames, "video_id": ids})
        opt.zero_grad()
        out["loss"].backward()
        if design == "code":
            assert method.head.weight.grad.abs().sum() > 0
            assert out["loss"].item() == pytest.approx((out["rec"] + 0.5 * out["rec_inter"] + out["compact"]).item(), rel=1e-5)
        opt.step()
        method.after_step(step, 8)
    after = loss_now()
    assert after < 0.5 * before, (before, after)
    if design == "code":
        assert method.bank.feats.shape[-1] == 128 and "head_key.weight" in method.state_dict()
        assert not any(p.requires_grad for p in method.head_key.parameters())
        assert not torch.equal(method.head_key.weight, method.head.weight)  # an EMA, not a copy
    else:
        assert not any(k.startswith("head") for k in method.state_dict())


def cfg_points(method: LIIR) -> int:
    return method.config.bank_points


def test_zero_border_lets_outside_cells_take_part():
    torch.manual_seed(0)
    q, r = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    logits, valid = window_logits(q, r, 2)
    from hvc.methods.liir.loss import border_valid

    masked = window_softmax(logits, border_valid(valid, "mask"))
    zero = window_softmax(logits, border_valid(valid, "zero"))
    assert torch.all(masked[0][~valid] == 0) and torch.all(zero[0][~valid] > 0)
    assert torch.allclose(zero[0], logits[0].softmax(-1))  # outside cells: logit 0, as the code's sampler
    with pytest.raises(ValueError, match="border"):
        border_valid(valid, "wrap")
