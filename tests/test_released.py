"""The authors' released weights: a checkpoint in the official key layout (built here, no
download) loads into our backbone, gives the official network's features, and runs through
propagation; a foreign checkpoint is refused with one line."""

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from hvc.eval.encoders import authors_encoder
from hvc.eval.predict import propagate_benchmark
from hvc.config.plan import plan, row_experiment, run_rows
from hvc.io import DataError
from hvc.methods.hvc.model import HVC
from hvc.config.params import ParamsError, load_params, parse_overrides
from hvc.eval.released import load_authors_encoder, official_to_backbone

ROOT = Path(__file__).resolve().parents[1]


def official_resnet18(seed: int) -> nn.Module:
    """The authors' encoder: ResNet-18 without fc, every conv of layer3/layer4 at stride 1
    (models/model.py ``remove_strides``), random weights and BN statistics."""
    torch.manual_seed(seed)
    net = resnet18(weights=None)
    del net.fc
    for layer in (net.layer3, net.layer4):
        for m in layer.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def official_layer3(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer3(net.layer2(net.layer1(x)))


def proj_block(prefix: str, in_dim: int, dim: int = 8) -> dict:
    """Keys and shapes of the authors' Space_Proj(ProjBlock)."""
    return {
        f"{prefix}.block.conv1.weight": torch.randn(dim, in_dim, 1, 1),
        f"{prefix}.block.conv1.bias": torch.randn(dim),
        f"{prefix}.block.bn1.weight": torch.ones(dim),
        f"{prefix}.block.bn1.bias": torch.zeros(dim),
        f"{prefix}.block.bn1.running_mean": torch.zeros(dim),
        f"{prefix}.block.bn1.running_var": torch.ones(dim),
        f"{prefix}.block.bn1.num_batches_tracked": torch.tensor(0),
        f"{prefix}.block.conv2.weight": torch.randn(dim, dim, 1, 1),
        f"{prefix}.block.conv3.weight": torch.randn(dim, dim, 1, 1),
    }


def official_checkpoint(online: nn.Module, target: nn.Module, ddp: bool = False) -> dict:
    """What the authors' train_img.py ``save_model`` writes for their HVC module."""
    model = {f"online_encoder.{k}": v for k, v in online.state_dict().items()}
    model |= {f"target_encoder.{k}": v for k, v in target.state_dict().items()}
    model |= proj_block("online_space_projector", 512) | proj_block("target_space_projector", 512)
    model |= proj_block("space_predictor", 8)
    model |= {"flow.conv1.weight": torch.randn(8, 16, 1, 1), "flow.conv1.bias": torch.zeros(8), "flow.bn2.weight": torch.ones(2)}
    if ddp:
        model = {f"module.{k}": v for k, v in model.items()}
    return {"model": model, "optimizer": {"state": {}, "param_groups": []}, "epoch": 20, "args": argparse.Namespace(pos_radius=0.1, epochs=20)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, nn.Module]:
    online, target = official_resnet18(0), official_resnet18(1)
    path = tmp_path_factory.mktemp("authors") / "hvc_coco.pth"
    torch.save(official_checkpoint(online, target), path)
    return path, online


def test_official_checkpoint_gives_the_official_features(checkpoint):
    path, online = checkpoint
    ours = load_authors_encoder(path)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        got, want = ours(x, "layer3"), official_layer3(online, x)
    assert got.shape == (1, 256, 12, 16)
    assert torch.allclose(got, want, atol=1e-5)
    # the online encoder (what the official inference uses), not the target
    target_state = torch.load(path, weights_only=False)["model"]["target_encoder.conv1.weight"]
    assert not torch.equal(ours.stem[0].weight, target_state)


def test_every_official_encoder_key_is_mapped(checkpoint):
    path, online = checkpoint
    state = torch.load(path, weights_only=False)
    mapped = official_to_backbone(state, path)
    assert len(mapped) == len(online.state_dict())  # one backbone key per online_encoder key
    ours = load_authors_encoder(path)
    ours_state = ours.state_dict()
    for k, v in mapped.items():
        assert torch.equal(ours_state[k], v), k


def test_ddp_prefix_and_bare_resnet_layouts_load(tmp_path, checkpoint):
    _, online = checkpoint
    ddp = tmp_path / "ddp.pth"
    torch.save(official_checkpoint(online, official_resnet18(2), ddp=True), ddp)
    bare = tmp_path / "bare.pth"  # models/encoder.py model_type='hvc': a plain ResNet-18 state dict
    torch.save({k: v for k, v in online.state_dict().items() if not k.startswith("layer4.")}, bare)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = official_layer3(online, x)
        for path in (ddp, bare):
            assert torch.allclose(load_authors_encoder(path)(x, "layer3"), want, atol=1e-5), path.name
    with pytest.raises(DataError, match="no layer4 weights"):
        load_authors_encoder(bare, layer="layer4")


def test_foreign_checkpoints_are_refused_in_one_line(tmp_path):
    ours = tmp_path / "ours.pt"  # our own training module's state dict is not the official layout
    torch.save(HVC(proj_dim=8).state_dict(), ours)
    with pytest.raises(DataError, match="not an HVC checkpoint of the official code") as e:
        load_authors_encoder(ours)
    assert str(ours) in str(e.value) and "\n" not in str(e.value)
    r50 = tmp_path / "r50.pth"
    from torchvision.models import resnet50

    torch.save({f"online_encoder.{k}": v for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}, r50)
    with pytest.raises(DataError, match="does not fit HVC's stride-8 ResNet-18"):
        load_authors_encoder(r50)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=str(junk.name)):
        load_authors_encoder(junk)


def _params(*overrides: str):
    base = ["device=cpu", "propagation.context=3", "propagation.radius=4", "propagation.topk=5"]
    return load_params([ROOT / "params.yaml"], parse_overrides(base + list(overrides)))


def test_authors_rows_in_the_plan_and_tables(checkpoint):
    path, _ = checkpoint
    without = _params("data.benchmarks=[davis2017]")
    row = {"label": "HVC (authors' weights)", "encoder": "authors"}
    assert row_experiment(without, row) is None and "authors" not in plan(without)
    with pytest.raises(ParamsError, match="authors_checkpoint"):
        authors_encoder(without)
    p = _params("data.benchmarks=[davis2017]", f"authors_checkpoint={path}")
    exp = plan(p)["authors"]
    assert not exp.trained and exp.encoder.startswith("authors-")
    labels = {(name, r["label"]) for name, r, _ in run_rows(p)}
    assert ("table1", "HVC (authors' weights)") in labels


def test_authors_weights_propagate_through_a_benchmark(checkpoint, tmp_path):
    from hvc.io import write_mask

    path, _ = checkpoint
    root = tmp_path / "DAVIS"  # a DAVIS 2017 layout, one 4-frame video of a square moving right
    rng = np.random.default_rng(0)
    for t in range(4):
        frame = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        mask = np.zeros((64, 96), np.uint8)
        mask[16:40, 10 + 4 * t : 34 + 4 * t] = 1
        from PIL import Image

        (root / "JPEGImages/480p/v").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(root / f"JPEGImages/480p/v/{t:05d}.jpg")
        write_mask(root / f"Annotations/480p/v/{t:05d}.png", mask)
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("v\n")
    p = _params("data.benchmarks=[davis2017]", f"authors_checkpoint={path}")
    info = propagate_benchmark(p, "authors", "davis2017", root, tmp_path / "pred")
    assert info["encoder"] == "authors" and info["frames"] == 3
    assert sorted(q.name for q in (tmp_path / "pred" / "v").iterdir()) == [f"{t:05d}.png" for t in range(4)]
