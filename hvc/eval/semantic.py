"""The frozen semantic encoder of the official feature merge (the authors'
infer_vos.py TEST.MERGE, models/encoder.py ``mocov1``; paper Table 6).

The authors' inference code (NUST-Machine-Intelligence-Laboratory/HVC, ``infer_vos.py``
with ``models/encoder.py`` and ``models/resnet.py``) by default matches frames on
``cat(1.05 * l2n(HVC layer3), l2n(MoCo layer3))``, L2-normalised again
(:func:`hvc.propagation.merge_features`). The MoCo half is built there as follows, and
here the same way:

- a torchvision-layout ResNet-50 loaded from facebookresearch/moco's
  ``moco_v1_200ep_pretrain.pth.tar``: the ``module.encoder_q.*`` entries of its
  ``state_dict``, prefix removed, the ``fc`` projection dropped (``make_encoder``,
  model type ``mocov1``, the default ``--merge-model``);
- every convolution of layer3 given stride 1 (``ResNet.modify``: the 3x3 ``conv2`` of
  the first bottleneck and its 1x1 downsample), no dilation, so layer3 has output
  stride 8 like the HVC backbone; layer4, avgpool and fc removed;
- input normalised with the ImageNet mean and std (``dataloader/dataloader_base.py``),
  the same input the HVC encoder gets.

One difference: the official ``partial_load`` silently keeps random weights for any key
missing from the checkpoint; :func:`load_semantic_encoder` refuses such a file instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from hvc.io import DataError, load_torch, state_dict_differences

SEMANTIC_CHANNELS = 1024  # ResNet-50 layer3
MOCO_PREFIXES = ("module.encoder_q.", "encoder_q.")  # saved from DistributedDataParallel, or not


class SemanticEncoder(nn.Module):
    """ResNet-50 up to layer3 with output stride 8, frozen (the authors' models/encoder.py).

    ``forward``: (B, 3, H, W) ImageNet-normalised → (B, 1024, ceil(H/8), ceil(W/8)), the
    same grid as :class:`hvc.methods.hvc.model.Backbone`. Parameter names are torchvision's
    (``conv1.weight``, ``layer3.5.bn3.running_var``, ...) without layer4 and fc. Every
    parameter has ``requires_grad=False`` and the module stays in eval mode
    (``train()`` does not switch it), so batch-norm statistics never change.
    """

    def __init__(self) -> None:
        super().__init__()
        net = resnet50(weights=None)
        for m in net.layer3.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SemanticEncoder:
        """Stays in eval mode: the encoder is frozen."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def load_semantic_encoder(path: Path) -> SemanticEncoder:
    """The frozen MoCo ResNet-50 layer3 encoder stored in ``path``, on the CPU.

    Args:
        path: a MoCo v1/v2 pre-training checkpoint (facebookresearch/moco's
            ``moco_v1_200ep_pretrain.pth.tar``: a dict whose ``"state_dict"`` holds
            ``module.encoder_q.*`` tensors; encoder_k, the queue and the fc projection,
            linear or MLP, are ignored), or a plain torchvision ResNet-50 state dict
            (``conv1.weight``, ...; layer4 and fc are ignored). Read with
            ``weights_only=True``: no code in the file runs.
    Returns:
        :class:`SemanticEncoder` in eval mode: (B, 3, H, W) ImageNet-normalised →
        (B, 1024, ceil(H/8), ceil(W/8)) float32 features, not normalised.
    Raises:
        DataError: naming the file: missing, a folder, not a PyTorch checkpoint
            (truncated or another format), holding Python objects a weights-only load
            refuses, or holding another model's weights (says how they differ: missing,
            unexpected and reshaped keys, with an example of each).
    """
    path = Path(path)
    ckpt = load_torch(
        path,
        "semantic encoder checkpoint",
        "the MoCo checkpoint file (e.g. moco_v1_200ep_pretrain.pth.tar)",
        hint=" (if you trust the file, re-save just its state dict of tensors)",
    )
    state = _resnet50_state(path, ckpt)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        net = SemanticEncoder()
    net.load_state_dict(state, strict=True, assign=True)
    return net.requires_grad_(False).eval()


def _resnet50_state(path: Path, ckpt: object) -> dict[str, torch.Tensor]:
    """The encoder's state dict (float32, torchvision names up to layer3) out of a loaded checkpoint.

    Raises:
        DataError: the checkpoint is not a dict of tensors, or does not fit the ResNet-50
            up to layer3 (one line: how it differs).
    """
    if not isinstance(ckpt, dict):
        raise DataError(path, f"expected a checkpoint dict, found {type(ckpt).__name__}")
    if {"model", "optimizer", "step"} <= set(ckpt):
        raise DataError(path, "is an HVC training checkpoint; pass a MoCo ResNet-50 checkpoint")
    arch = ckpt.get("arch")
    if isinstance(arch, str) and arch != "resnet50":
        raise DataError(path, f"is a checkpoint of a {arch}, not the ResNet-50 the semantic encoder needs")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    for prefix in MOCO_PREFIXES:
        if any(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not (isinstance(k, str) and k.startswith(("fc.", "layer4.")))}
    with torch.device("meta"):  # shapes only
        expected = {k: tuple(v.shape) for k, v in SemanticEncoder().state_dict().items()}
    differences = state_dict_differences(state, expected, "ResNet-50")
    if differences:
        hint = " (an HVC encoder.pt? the semantic encoder is MoCo's ResNet-50)" if "stem.0.weight" in state else ""
        raise DataError(
            path,
            f"holds another model's weights, not a ResNet-50 (MoCo encoder_q or torchvision){hint}: {differences}",
        )
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
