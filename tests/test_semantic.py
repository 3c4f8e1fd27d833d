"""The frozen MoCo ResNet-50 encoder of the official feature merge: loading, shapes, errors."""

import argparse
import math

import numpy as np
import pytest
import torch
from torchvision.models import resnet18, resnet50

from hvc.io import DataError
from hvc.methods.hvc.model import Backbone, build_encoder_for_propagation
from hvc.propagation import PropagationConfig, merge_features, merged_encoder, propagate_video
from hvc.eval.semantic import SEMANTIC_CHANNELS, SemanticEncoder, load_semantic_encoder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny inputs: on a few shared cores, more threads only add waiting. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict with random weights and non-trivial BN statistics."""
    torch.manual_seed(0)
    state = resnet50(weights=None).state_dict()
    for k, v in state.items():
        if k.endswith("running_mean"):
            v.normal_(0.0, 0.1)
        elif k.endswith("running_var"):
            v.uniform_(0.5, 1.5)
    return state


@pytest.fixture(scope="module")
def moco_path(tmp_path_factory, resnet50_state):
    """A MoCo v1 checkpoint of ``resnet50_state``, saved once for the module."""
    path = tmp_path_factory.mktemp("moco") / "moco_v1_200ep_pretrain.pth.tar"
    torch.save(moco_checkpoint(resnet50_state), path)
    return path


@pytest.fixture(scope="module")
def semantic(moco_path):
    return load_semantic_encoder(moco_path)


def moco_checkpoint(state: dict[str, torch.Tensor], fc: str = "v1", arch: str = "resnet50") -> dict:
    """A facebookresearch/moco pre-training checkpoint: encoder_q/encoder_k, queue, a 128-d fc head."""
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if fc == "v1":  # linear projection
        head = {"fc.weight": torch.randn(128, 2048), "fc.bias": torch.zeros(128)}
    else:  # v2: MLP projection
        head = {
            "fc.0.weight": torch.randn(2048, 2048),
            "fc.0.bias": torch.zeros(2048),
            "fc.2.weight": torch.randn(128, 2048),
        }
    sd = {f"module.encoder_q.{k}": v for k, v in {**body, **head}.items()}
    # the momentum encoder, with other weights (a part of it: enough to catch loading it instead)
    sd.update({f"module.encoder_k.{k}": v + 1.0 for k, v in body.items() if k.startswith(("conv1.", "layer1.0."))})
    sd["module.queue"] = torch.randn(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": arch, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}


@pytest.mark.parametrize("fmt", ["moco_v1", "moco_v2", "torchvision"])
def test_checkpoint_loads_frozen(tmp_path, resnet50_state, moco_path, fmt):
    path = moco_path if fmt == "moco_v1" else tmp_path / "semantic.pth.tar"
    if fmt != "moco_v1":
        torch.save(resnet50_state if fmt == "torchvision" else moco_checkpoint(resnet50_state, fc="v2"), path)
    net = load_semantic_encoder(path)

    assert isinstance(net, SemanticEncoder)
    for name in ("conv1.weight", "layer1.0.bn1.running_mean", "layer3.5.conv3.weight", "layer3.0.downsample.1.bias"):
        assert torch.equal(net.state_dict()[name], resnet50_state[name]), name  # encoder_q, not encoder_k
    assert not any(k.startswith(("layer4.", "fc.")) for k in net.state_dict())
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    net.train()
    assert not net.training  # frozen: batch-norm statistics never update


def test_output_is_layer3_at_stride8(semantic):
    with torch.no_grad():
        y = semantic(torch.randn(2, 3, 64, 96))
        odd = semantic(torch.randn(1, 3, 61, 90))
        hvc = Backbone().eval()(torch.randn(1, 3, 61, 90), "layer3")
    assert y.shape == (2, SEMANTIC_CHANNELS, 8, 12) == (2, 1024, 64 // 8, 96 // 8)
    assert y.dtype == torch.float32 and torch.isfinite(y).all() and (y > 0).any()
    assert odd.shape[-2:] == hvc.shape[-2:] == (8, 12)  # ceil(H/8): the HVC backbone's grid


def test_layer3_strides_are_removed_without_dilation(semantic, resnet50_state):
    """The first layer3 block at stride 1 = torchvision's stride-2 block sampled every other cell."""
    ours = semantic
    with torch.device("meta"):
        tv = resnet50(weights=None)
    tv.load_state_dict(resnet50_state, assign=True)
    tv.eval()
    x = torch.randn(1, 512, 12, 16)  # a layer2 output
    with torch.no_grad():
        dense = ours.layer3[0](x)
        strided = tv.layer3[0](x)
    assert dense.shape == (1, 1024, 12, 16) and strided.shape == (1, 1024, 6, 8)
    assert torch.allclose(dense[..., ::2, ::2], strided, atol=1e-5)
    assert all(m.dilation == (1, 1) for m in ours.modules() if isinstance(m, torch.nn.Conv2d))


def test_resnet18_checkpoints_are_refused_with_the_difference(tmp_path):
    state18 = resnet18(weights=None).state_dict()

    moco18 = tmp_path / "moco_r18.pth.tar"
    torch.save(moco_checkpoint(state18, arch="resnet18"), moco18)
    with pytest.raises(DataError, match=r"checkpoint of a resnet18, not the ResNet-50") as e:
        load_semantic_encoder(moco18)
    assert e.value.path == str(moco18)

    plain18 = tmp_path / "resnet18.pth"
    torch.save(state18, plain18)
    with pytest.raises(DataError) as e:
        load_semantic_encoder(plain18)
    msg = str(e.value)
    assert msg.startswith(f"{plain18}: holds another model's weights, not a ResNet-50")
    assert "missing keys (e.g. layer1.0.conv3.weight)" in msg
    assert "keys of another shape (e.g. layer1.0.conv1.weight: [64, 64, 3, 3] here, [64, 64, 1, 1] in ResNet-50)" in msg

    encoder_pt = tmp_path / "encoder.pt"  # the HVC backbone passed by mistake
    torch.save(Backbone().state_dict(), encoder_pt)
    with pytest.raises(DataError, match=r"an HVC encoder\.pt\?.*unexpected keys \(e\.g\. stem\.0\.weight\)"):
        load_semantic_encoder(encoder_pt)


def test_unreadable_files_are_refused_naming_the_file(tmp_path, resnet50_state):
    missing = tmp_path / "moco_v1_200ep_pretrain.pth.tar"
    with pytest.raises(DataError, match="checkpoint not found") as e:
        load_semantic_encoder(missing)
    assert e.value.path == str(missing)

    with pytest.raises(DataError, match="is a folder"):
        load_semantic_encoder(tmp_path)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all " * 40)
    with pytest.raises(DataError, match="not a PyTorch checkpoint") as e:
        load_semantic_encoder(garbage)
    assert e.value.path == str(garbage)

    truncated = tmp_path / "truncated.pth"
    torch.save({"conv1.weight": resnet50_state["conv1.weight"]}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or not a PyTorch checkpoint"):
        load_semantic_encoder(truncated)

    pickled = tmp_path / "with_args.pth.tar"  # an object a weights-only load refuses; nothing in it runs
    torch.save({"args": argparse.Namespace(arch="resnet50"), "state_dict": {}}, pickled)
    with pytest.raises(DataError, match=r"weights-only load refuses \(e\.g\. argparse\.Namespace\)") as e:
        load_semantic_encoder(pickled)
    assert e.value.path == str(pickled)

    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(DataError, match="expected a checkpoint dict, found Tensor"):
        load_semantic_encoder(tensor)


def test_merge_gives_unit_vectors_of_both_channel_counts(semantic):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 96)
    hvc = torch.randn(1, 256, 8, 12)
    with torch.no_grad():
        sem = semantic(x)
    merged = merge_features(hvc, sem)
    assert merged.shape == (1, 256 + SEMANTIC_CHANNELS, 8, 12)
    assert torch.allclose(merged.norm(dim=1), torch.ones(1, 8, 12), atol=1e-5)
    # weight 1.05 on the unit HVC half, 1 on the unit semantic half: fixed shares of the norm
    share = merged[:, :256].norm(dim=1)
    assert torch.allclose(share, torch.full_like(share, 1.05 / math.hypot(1.05, 1.0)), atol=1e-5)
    # a stride-16 semantic map (the unmodified ResNet-50) is resized to the HVC grid
    assert merge_features(hvc, sem[..., ::2, ::2]).shape == (1, 1280, 8, 12)


def test_propagation_with_the_semantic_merge(semantic):
    """A still video keeps its object when matching on the merged HVC + MoCo features."""
    torch.manual_seed(2)
    encoder = build_encoder_for_propagation(None)
    shapes = []

    def extra(x):
        y = semantic(x)
        shapes.append(tuple(y.shape))
        return y

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)] * 3
    first = np.zeros((64, 96), np.uint8)
    first[16:48, 24:72] = 1
    cfg = PropagationConfig(temperature=0.1, topk=5, context=2, radius=4)
    with torch.no_grad():
        pred = propagate_video(merged_encoder(encoder, extra), frames, first, cfg)
    assert shapes == [(1, 1024, 8, 12)] * 3  # one semantic pass per frame
    assert pred.shape == (3, 64, 96)
    assert (pred[0] == first).all()
    for t in (1, 2):
        iou = ((pred[t] == 1) & (first == 1)).sum() / ((pred[t] == 1) | (first == 1)).sum()
        assert iou > 0.7, (t, iou)
