"""The frozen encoders label propagation runs on: a trained ``encoder.pt``, the random and
ImageNet baselines, the authors' released weights, the semantic (MoCo) encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hvc.io import (
    DataError,
    first_line,
    load_torch,
    state_dict_differences,
)
from hvc.methods.hvc.model import Backbone, backbone_key, backbone_shapes, build_encoder_for_propagation
from hvc.config.params import Params, ParamsError
from hvc.eval.released import load_authors_encoder
from hvc.eval.semantic import load_semantic_encoder

log = logging.getLogger(__name__)


def load_encoder(spec: str, seed: int = 0) -> Backbone:
    """The frozen encoder named by ``spec``.

    Args:
        spec: path of an ``encoder.pt`` (backbone state dict written by the train stage);
            ``"random"``: a randomly initialised backbone (seeded by ``seed``);
            ``"imagenet"``: torchvision's ImageNet-supervised ResNet-18 weights (downloaded
            to the torch hub cache on first use) in the stride-8 backbone.
    Raises:
        DataError: the file is missing, truncated, or holds another model's weights; for
            ``"imagenet"``, naming the torch hub cache file, when the weights are neither
            cached nor downloadable (no network) or the download is corrupt.
    """
    if spec == "random":
        torch.manual_seed(seed)
        return build_encoder_for_propagation(None)
    if spec == "imagenet":
        state = _imagenet_resnet18_state()
        return build_encoder_for_propagation({backbone_key(k): v for k, v in state.items() if not k.startswith("fc.")})
    path = Path(spec)
    hint = " (checkpoint.pt is the training state)" if path.name == "checkpoint.pt" else ""
    state = load_torch(path, "encoder checkpoint", "the encoder.pt written by `hvc train`", hint)
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict, found {type(state).__name__}")
    _check_backbone_state(path, state)
    try:
        return build_encoder_for_propagation(state)
    except (ValueError, RuntimeError) as e:
        raise DataError(path, first_line(e)) from None


def _imagenet_resnet18_state() -> dict:
    """torchvision's ImageNet ResNet-18 state dict (IMAGENET1K_V1), from the torch hub
    cache or downloaded into it; a DataError naming the cache file when that fails."""
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    try:
        return resnet18(weights=weights).state_dict()
    except Exception as e:  # noqa: BLE001 - URLError, OSError, RuntimeError (hash), EOFError...
        raise DataError(
            cached,
            f"ImageNet ResNet-18 weights unavailable ({type(e).__name__}: {first_line(e)}); without network, "
            f"download {weights.url} elsewhere and put it here",
        ) from None


def _check_backbone_state(path: Path, state: dict) -> None:
    """Compare a state dict with the HVC ResNet-18 backbone's keys and shapes.

    Raises:
        DataError: one line saying how the checkpoint differs (missing, unexpected and
            reshaped keys, with an example of each), e.g. for a ResNet-50 or a full
            training checkpoint.
    """
    if {"model", "optimizer", "step"} <= set(state):
        raise DataError(path, "is a full training checkpoint (checkpoint.pt); pass encoder.pt from the same folder")
    differences = state_dict_differences(state, backbone_shapes(), "HVC")
    if not differences:
        return
    raise DataError(
        path,
        f"holds another model's weights, not the HVC ResNet-18 backbone: {differences}; "
        "pass the encoder.pt written by `hvc train`",
    )


def semantic_features(p: Params, device: torch.device):
    """The frozen semantic encoder of ``propagation.semantic_checkpoint``: (1, 3, h, w) →
    (1, 1024, h/8, w/8) for :func:`hvc.eval.propagation.merged_encoder`.

    Raises:
        ParamsError: ``propagation.semantic_checkpoint`` is not set.
        DataError: the checkpoint is missing or not a MoCo/ResNet-50 checkpoint.
    """
    if p.propagation.semantic_checkpoint is None:
        raise ParamsError("the semantic encoder needs propagation.semantic_checkpoint (a MoCo-v1 ResNet-50 checkpoint)")
    return load_semantic_encoder(Path(p.propagation.semantic_checkpoint)).to(device)


def authors_encoder(p: Params) -> Backbone:
    """Our backbone with the authors' released weights of ``authors_checkpoint``.

    Raises:
        ParamsError: ``authors_checkpoint`` is not set.
        DataError: the file is missing or not an official HVC checkpoint.
    """
    if p.authors_checkpoint is None:
        raise ParamsError("the authors' weights need authors_checkpoint (the official hvc.pth)")
    return load_authors_encoder(Path(p.authors_checkpoint), p.propagation.feature_layer)
