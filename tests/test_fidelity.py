"""Our HVC pieces against the authors' formulas, written out here as their code writes them
(github.com/NUST-Machine-Intelligence-Laboratory/HVC, models/model.py), on the same tensors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hvc.methods.hvc.loss import positive_mask
from hvc.methods.hvc.model import HVC, SpaceProjection
from hvc.methods.hvc.views import NORMALIZATION


def official_positive_mask(coord_q, coord_k, H, W, pos_radius):
    """The positive mask of the authors' ``HVC.hybrid_loss``, operation for operation."""
    x_array = torch.arange(0.0, float(W), dtype=coord_q.dtype).view(1, 1, -1).repeat(1, H, 1)
    y_array = torch.arange(0.0, float(H), dtype=coord_q.dtype).view(1, -1, 1).repeat(1, 1, W)
    q_bw = ((coord_q[:, 2] - coord_q[:, 0]) / W).view(-1, 1, 1)
    q_bh = ((coord_q[:, 3] - coord_q[:, 1]) / H).view(-1, 1, 1)
    k_bw = ((coord_k[:, 2] - coord_k[:, 0]) / W).view(-1, 1, 1)
    k_bh = ((coord_k[:, 3] - coord_k[:, 1]) / H).view(-1, 1, 1)
    max_diag = torch.max(torch.sqrt(q_bw**2 + q_bh**2), torch.sqrt(k_bw**2 + k_bh**2))
    qx = (x_array + 0.5) * q_bw + coord_q[:, 0].view(-1, 1, 1)
    qy = (y_array + 0.5) * q_bh + coord_q[:, 1].view(-1, 1, 1)
    kx = (x_array + 0.5) * k_bw + coord_k[:, 0].view(-1, 1, 1)
    ky = (y_array + 0.5) * k_bh + coord_k[:, 1].view(-1, 1, 1)
    dist = (
        torch.sqrt((qx.view(-1, H * W, 1) - kx.view(-1, 1, H * W)) ** 2 + (qy.view(-1, H * W, 1) - ky.view(-1, 1, H * W)) ** 2)
        / max_diag
    )
    return (dist < pos_radius).float()


def random_crop_boxes(n, seed, size=480):
    """Normalised boxes of RandomResizedCrop(scale=(0, 1), ratio=(3/4, 4/3)) on a size x size
    image, recorded as the views do: (x1/(W-1), y1/(H-1), (x1+w-1)/(W-1), (y1+h-1)/(H-1))."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(seed)
    img = torch.zeros(3, size, size)
    boxes = []
    for _ in range(n):
        i, j, h, w = RandomResizedCrop.get_params(img, scale=(0.0, 1.0), ratio=(3 / 4, 4 / 3))
        boxes.append([j / (size - 1), i / (size - 1), (j + w - 1) / (size - 1), (i + h - 1) / (size - 1)])
    return torch.tensor(boxes, dtype=torch.float32)


@pytest.mark.parametrize("radius", [0.01, 0.1, 0.3, 0.7])
def test_positive_counts_equal_the_official_formula(radius):
    b1, b2 = random_crop_boxes(16, seed=0), random_crop_boxes(16, seed=1)
    ours = positive_mask(b1, b2, 32, 32, radius, unit="cell")
    ref = official_positive_mask(b1, b2, 32, 32, radius)
    assert torch.equal(ours.sum(dim=(1, 2)), ref.sum(dim=(1, 2)))  # the counts, pair by pair
    assert torch.equal(ours, ref)  # and the entries


def test_positive_count_at_default_radius_is_the_papers_order():
    # Fig. 8 of the paper prints about 54 positives per crop pair at r = 0.1 (cell reading);
    # the image-unit reading would give tens of thousands
    b1, b2 = random_crop_boxes(64, seed=2), random_crop_boxes(64, seed=3)
    counts = positive_mask(b1, b2, 32, 32, 0.1, unit="cell").sum(dim=(1, 2))
    overlapping = counts[counts > 0]
    assert 20 < overlapping.float().mean().item() < 200
    image = positive_mask(b1, b2, 32, 32, 0.1, unit="image").sum(dim=(1, 2))
    assert image.float().mean().item() > 100 * counts.float().mean().item()


def test_exact_distance_keeps_boundary_entries_that_cdist_flips():
    # a pair whose cell distances sit exactly on r: the exact formula and the official one agree
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    shifted = torch.tensor([[0.0, 0.03125, 1.0, 1.03125]])  # one cell height down at 32 rows
    for r in (0.5, 0.7071, 1.0):
        assert torch.equal(positive_mask(b, shifted, 32, 32, r), official_positive_mask(b, shifted, 32, 32, r))


class OfficialProjBlock(nn.Module):
    """The authors' ProjBlock (models/model.py), written out."""

    def __init__(self, in_dim, inner_dim, out_dim):
        super().__init__()
        self.relu = nn.LeakyReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_dim, inner_dim, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(inner_dim)
        self.conv2 = nn.Conv2d(inner_dim, inner_dim, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(inner_dim)
        self.conv3 = nn.Conv2d(inner_dim, out_dim, 1, bias=True)

    def forward(self, x):
        residual = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(residual) + residual
        return self.conv3(self.relu(self.bn2(out)))


@pytest.mark.parametrize("train", [True, False])
def test_official_head_equals_the_official_block(train):
    torch.manual_seed(0)
    ours = SpaceProjection(64, 32, head="official")
    ref = OfficialProjBlock(64, 32, 32)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in (ours.bn1, ours.bn2):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.normal_()
            m.bias.normal_()
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same parameter names, every one
    ours.train(train)
    ref.train(train)
    x = torch.randn(4, 64, 5, 5) * 3
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert isinstance(ours.act, nn.LeakyReLU) and ours.act.negative_slope == 0.01
    assert all(c.bias is not None for c in (ours.conv1, ours.conv2, ours.conv3))


def test_paper_head_differs_from_official():
    torch.manual_seed(0)
    paper = SpaceProjection(16, 16, head="paper")
    assert isinstance(paper.act, nn.ReLU) and paper.conv1.bias is None
    x = torch.randn(2, 16, 3, 3)
    r = paper.act(paper.bn1(paper.conv1(x)))
    expected = paper.conv3(paper.act(paper.bn2(paper.conv2(r))))
    assert torch.allclose(paper(x), expected)


def test_cifar_normalisation_is_the_official_pair():
    mean, std = NORMALIZATION["cifar"]
    assert mean == (0.4914, 0.4822, 0.4465)
    assert std == (0.2023, 0.1994, 0.2010)


def official_hybrid_loss(q, k, coord_q, coord_k, flow, pos_radius):
    """The authors' ``HVC.hybrid_loss`` value: -2 x (static + dynamic similarity)."""
    N, C, H, W = q.shape
    pos_mask = official_positive_mask(coord_q, coord_k, H, W, pos_radius)
    spatial = torch.bmm(q.view(N, C, -1).transpose(1, 2), k.view(N, C, -1))
    spatial_loss = (spatial * pos_mask).sum(-1).sum(-1) / (pos_mask.sum(-1).sum(-1) + 1e-6)
    flow_f, flow_b = F.normalize(flow(q, k), dim=1), F.normalize(flow(k, q), dim=1)
    temporal = torch.bmm(flow_f.view(N, 2, -1).transpose(1, 2), flow_b.view(N, 2, -1))
    temporal_loss = (temporal * pos_mask).sum(-1).sum(-1) / (pos_mask.sum(-1).sum(-1) + 1e-6)
    return -2 * (spatial_loss.mean() + temporal_loss.mean())


def test_logged_loss_equals_the_official_value():
    torch.manual_seed(0)
    model = HVC(proj_dim=32, head="official").eval()  # eval: BN uses running stats in both paths
    v1, v2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    b1, b2 = random_crop_boxes(2, seed=4), random_crop_boxes(2, seed=5)
    b2[0] = b1[0]  # one pair fully overlapping, so the mask is not empty
    with torch.no_grad():
        out = model(v1, v2, b1, b2)
        o1, o2, t1, t2 = model.embed(v1, v2)

        def flow(a, b):
            return model.pseudo.net(torch.cat([a, b], dim=1))

        ref = official_hybrid_loss(o1, t2, b1, b2, flow, 0.1) + official_hybrid_loss(o2, t1, b2, b1, flow, 0.1)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert math.isfinite(out["loss"].item()) and out["loss"].item() != 0


def test_readme_faithfulness_table_names_default_and_published_reading():
    import re
    from pathlib import Path

    from hvc.config.params import Params

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Faithfulness")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    header, body = rows[0], rows[1:]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "what", "our default", "other option", "published numbers came from",
    ]  # fmt: skip
    assert len(body) >= 8
    defaults = Params().model_dump()
    for row in body:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and cells[1] and cells[3], row
        # a `section.key: value` named as our default must be the schema's default
        for section, key, value in re.findall(r"`(\w+)\.(\w+): (\w+)`", cells[1]):
            assert str(defaults[section][key]) == value, row


def test_content_ids_follow_what_each_stage_reads():
    from hvc.config.params import Params
    from hvc.config.ids import stage_ids

    base = stage_ids(Params())
    seeded = stage_ids(Params(seed=1))
    assert seeded["propagate"] != base["propagate"]  # the random-init baseline is drawn from the seed
    assert seeded["train"] != base["train"]
    bound = stage_ids(Params(eval={"bound_th": 0.01}))
    assert bound["evaluate"] != base["evaluate"]
    assert {k: v for k, v in bound.items() if k != "evaluate"} == {k: v for k, v in base.items() if k != "evaluate"}
    logging_only = stage_ids(Params(train={"log_every": 1}))
    assert logging_only == base  # logging frequency does not make another model
