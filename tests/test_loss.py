"""The positive mask, the hybrid loss and the EMA schedule on hand-built tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from hvc.methods.hvc.loss import cell_centres, hybrid_loss, masked_similarity, positive_mask, symmetric_hybrid_loss
from hvc.methods.hvc.model import HVC, PseudoDynamic, momentum_at

FULL = torch.tensor([[0.0, 0.0, 1.0, 1.0]])


def test_cell_centres_of_whole_image_grid():
    c = cell_centres(FULL, 2, 2)
    assert torch.allclose(c[0], torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]))


def test_identical_crops_give_diagonal_mask():
    for unit, r in (("image", 0.1), ("cell", 0.5)):
        mask = positive_mask(FULL, FULL, 4, 4, radius=r, unit=unit)
        assert torch.equal(mask[0], torch.eye(16)), unit


def test_mask_radius_counts_neighbours():
    # 4x4 grid on the unit square: neighbour centres are 0.25 apart, diagonals 0.354
    mask = positive_mask(FULL, FULL, 4, 4, radius=0.3, unit="image")[0]
    assert mask[5].sum() == 5  # an inner cell: itself + 4 edge neighbours
    mask = positive_mask(FULL, FULL, 4, 4, radius=0.36, unit="image")[0]
    assert mask[5].sum() == 9  # + 4 diagonal neighbours


def test_disjoint_crops_give_empty_mask_and_finite_zero_loss():
    b1 = torch.tensor([[0.0, 0.0, 0.3, 0.3]])
    b2 = torch.tensor([[0.7, 0.7, 1.0, 1.0]])
    for unit in ("cell", "image"):
        assert positive_mask(b1, b2, 4, 4, 0.1, unit).sum() == 0
    f1 = F.normalize(torch.randn(1, 8, 4, 4), dim=1).requires_grad_()
    f2 = F.normalize(torch.randn(1, 8, 4, 4), dim=1)
    out = hybrid_loss(f1, f2, b1, b2, PseudoDynamic(8, 8), radius=0.1)
    assert torch.isfinite(out["loss"]) and out["loss"].item() == 0.0
    out["loss"].backward()
    assert torch.isfinite(f1.grad).all()


def test_static_loss_equals_hand_computed_value():
    # two 1x2 feature maps; identical full-image crops -> A = identity
    f1 = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, C=2, 1, 2): cells (1,0), (0,1)
    f2 = torch.tensor([[[[0.6, 1.0]], [[0.8, 0.0]]]])  # cells (0.6,0.8), (1,0)
    out = hybrid_loss(f1, f2, FULL, FULL, None, radius=0.1, static=True, dynamic=False)
    # cos(cell0) = 0.6, cos(cell1) = 0.0 -> L_static = -(0.6 + 0.0) / 2
    assert out["static"].item() == pytest.approx(-0.3)
    assert out["loss"].item() == pytest.approx(-0.6)  # x2, as the authors' code returns it
    assert out["dynamic"].item() == 0.0


def test_masked_similarity_averages_positive_pairs():
    a = F.normalize(torch.randn(2, 4, 2, 2), dim=1)
    mask = torch.zeros(2, 4, 4)
    mask[0, 0, 3] = mask[0, 1, 1] = 1
    sim = masked_similarity(a, a, mask)
    flat = a.flatten(2)
    expected0 = (flat[0, :, 0] @ flat[0, :, 3] + 1.0) / 2
    assert sim[0].item() == pytest.approx(expected0.item(), abs=1e-6)
    assert sim[1].item() == 0.0  # empty mask -> 0, not NaN


def test_hybrid_loss_weights_dynamic_term_by_alpha():
    torch.manual_seed(0)
    f1 = F.normalize(torch.randn(2, 8, 4, 4), dim=1)
    f2 = F.normalize(torch.randn(2, 8, 4, 4), dim=1)
    box = FULL.repeat(2, 1)
    pseudo = PseudoDynamic(8, 8).eval()
    one = hybrid_loss(f1, f2, box, box, pseudo, radius=0.3, alpha=1.0)
    two = hybrid_loss(f1, f2, box, box, pseudo, radius=0.3, alpha=2.0)
    assert two["loss"].item() == pytest.approx(2 * (one["static"] + 2 * one["dynamic"]).item(), abs=1e-6)
    assert -1 <= one["dynamic"].item() <= 1


def test_symmetric_loss_sums_both_directions():
    torch.manual_seed(1)
    o1, o2, t1, t2 = (F.normalize(torch.randn(1, 8, 4, 4), dim=1) for _ in range(4))
    b1, b2 = torch.tensor([[0.0, 0.0, 0.8, 0.8]]), torch.tensor([[0.2, 0.2, 1.0, 1.0]])
    kw = dict(radius=0.2, static=True, dynamic=False)
    total = symmetric_hybrid_loss(o1, o2, t1, t2, b1, b2, None, **kw)
    a = hybrid_loss(o1, t2, b1, b2, None, **kw)["loss"]
    b = hybrid_loss(o2, t1, b2, b1, None, **kw)["loss"]
    assert total["loss"].item() == pytest.approx((a + b).item())


def test_momentum_schedule_at_0_half_and_end():
    assert momentum_at(0, 100) == pytest.approx(0.99)
    assert momentum_at(50, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 2) + 1) / 2)  # 0.995
    assert momentum_at(50, 100) == pytest.approx(0.995)
    assert momentum_at(100, 100) == pytest.approx(1.0)


def test_ema_update_formula():
    model = HVC(proj_dim=16)
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target.parameters()]
    online = list(model.online.parameters())
    model.update_target(0.9)
    for b, t, o in zip(before, model.target.parameters(), online):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    model.update_target(1.0)  # m = 1 leaves the target unchanged
    after = [p.clone() for p in model.target.parameters()]
    model.update_target(1.0)
    assert all(torch.equal(a, t) for a, t in zip(after, model.target.parameters()))


def test_backbone_has_output_stride_8_and_zero_init_residuals():
    model = HVC(proj_dim=16)
    x = torch.randn(1, 3, 64, 64)
    assert model.online.backbone(x, "layer3").shape == (1, 256, 8, 8)
    assert model.online.backbone(x, "layer4").shape == (1, 512, 8, 8)
    for layer in (model.online.backbone.layer1, model.online.backbone.layer4):
        for block in layer:
            assert torch.all(block.bn2.weight == 0)
    # the target starts as a copy of the online encoder and gets no gradient
    for o, t in zip(model.online.parameters(), model.target.parameters()):
        assert torch.equal(o, t) and not t.requires_grad
