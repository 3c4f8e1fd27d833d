"""The authors' released HVC weights, loaded into our backbone for label propagation.

The official repository (github.com/NUST-Machine-Intelligence-Laboratory/HVC, README "Model
Zoo": ``releases_models.zip``) trains with ``train_img.py``, whose ``save_model`` writes
``{"model": HVC.state_dict(), "optimizer": ..., "epoch": ..., "args": Namespace}``. The
state dict of its ``HVC`` module (models/model.py) holds:

- ``online_encoder.*`` and ``target_encoder.*``: torchvision-layout ResNet-18s
  (``conv1``, ``bn1``, ``layer1`` .. ``layer4``; no ``fc``, as ``head_type='early_return'``
  builds them), strides of layer3/layer4 removed;
- ``online_space_projector.block.*``, ``target_space_projector.block.*``,
  ``space_predictor.block.*``: ``ProjBlock`` heads;
- ``flow.*``: the pseudo-dynamic module.

The official inference (models/encoder.py ``make_encoder``) takes the online encoder
(``model_type='fine-grained'``), or a bare ResNet-18 state dict (``model_type='hvc'``);
both layouts load here, as does a DistributedDataParallel ``module.`` prefix. Propagation
uses the online encoder; the other parts are recognised and left out.

Using these weights separates "our evaluation reproduces the paper" from "our training
reproduces the paper" (the tables' "HVC (authors' weights)" rows).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from hvc.io import DataError, load_torch, state_dict_differences
from hvc.methods.hvc.model import Backbone, backbone_key, backbone_shapes

log = logging.getLogger(__name__)

ONLINE = "online_encoder."
# Parts of the authors' HVC module that label propagation does not use.
UNUSED_PREFIXES = (
    "target_encoder.",
    "online_space_projector.",
    "target_space_projector.",
    "space_predictor.",
    "flow.",
)
_RESNET_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def official_to_backbone(state: dict, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Map an official HVC checkpoint's online encoder to a :class:`Backbone` state dict.

    Args:
        state: what ``torch.load`` returned: ``{"model": HVC state dict, ...}`` (train_img.py),
            the HVC state dict itself, or a bare ResNet-18 state dict (``conv1.weight`` ...);
            keys may carry DistributedDataParallel's ``module.`` prefix.
        path: the file, for messages.
    Returns:
        {Backbone key: tensor} covering the stem and layer1..layer3 (layer4 too when present).
    Raises:
        DataError: a key that belongs to none of the official parts (another model's
            checkpoint), or encoder weights missing or of the wrong shape.
    """
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise DataError(path, "holds no state dict; expected the authors' HVC checkpoint (hvc.pth)")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(ONLINE) for k in state):
        foreign = [k for k in state if not k.startswith(ONLINE) and not k.startswith(UNUSED_PREFIXES)]
        resnet = {k.removeprefix(ONLINE): v for k, v in state.items() if k.startswith(ONLINE)}
    else:
        foreign = [k for k in state if not k.startswith(_RESNET_PREFIXES + ("fc.",))]
        resnet = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if foreign:
        raise DataError(
            path,
            f"is not an HVC checkpoint of the official code: {len(foreign)} keys belong to no part of it "
            f"(e.g. {foreign[0]}); expected online_encoder.*, target_encoder.*, *_space_projector.*, "
            "space_predictor.*, flow.* or a bare ResNet-18",
        )
    mapped = {backbone_key(k): v for k, v in resnet.items()}
    expected = backbone_shapes()
    if not any(k.startswith("layer4.") for k in mapped):  # encoders saved without layer4 still propagate
        expected = {k: s for k, s in expected.items() if not k.startswith("layer4.")}
    differences = state_dict_differences(mapped, expected, "HVC's ResNet-18")
    if differences:
        raise DataError(path, f"its online encoder does not fit HVC's stride-8 ResNet-18: {differences}")
    return mapped


def load_authors_encoder(path: str | Path, layer: str = "layer3") -> Backbone:
    """Our :class:`Backbone` with the online encoder of the authors' released checkpoint.

    Args:
        path: e.g. ``checkpoints/hvc_coco.pth`` from the official model zoo.
        layer: the layer propagation reads (``propagation.feature_layer``).
    Returns:
        the frozen backbone in eval mode; (1, 3, H, W) → (1, 256, H/8, W/8) at layer3. When
        the file has no layer4 weights, layer4 keeps its initialisation (propagation reads
        layer3) and a warning says so.
    Raises:
        DataError: the file is missing, unreadable, or not an official HVC checkpoint; or
            ``layer`` is layer4 and the file has no layer4 weights.
    """
    state = load_torch(
        path, "authors' HVC checkpoint", "the official hvc.pth (online_encoder.* keys)", safe_globals=(argparse.Namespace,)
    )
    mapped = official_to_backbone(state, path)
    net = Backbone()
    missing, unexpected = net.load_state_dict(mapped, strict=False)
    if unexpected or any(not k.startswith("layer4.") for k in missing):  # guarded above; never silent
        raise DataError(path, f"does not load into HVC's ResNet-18 ({len(missing)} missing, {len(unexpected)} unexpected keys)")
    if missing and layer == "layer4":
        raise DataError(path, "has no layer4 weights, but propagation.feature_layer is layer4; use layer3")
    if missing:
        log.warning("%s: no layer4 weights; layer4 keeps its initialisation (propagation reads layer3)", path)
    return net.eval()
