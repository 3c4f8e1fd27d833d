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
    read_json,
    state_dict_differences,
)
from hvc.config.params import Params, ParamsError
from hvc.config.registry import DEFAULT_METHOD, encoder_provider, load_function, method_spec
from hvc.inputs import NORMALIZATION, normalize_input
from hvc.methods import get_method
from hvc.methods.base import EncoderSpec
from hvc.methods.hvc.model import Backbone, backbone_shapes, build_encoder_for_propagation
from hvc.eval.released import load_authors_encoder
from hvc.eval.semantic import load_semantic_encoder

log = logging.getLogger(__name__)


def load_encoder(spec: str, seed: int = 0, method: str | None = None, p: Params | None = None) -> torch.nn.Module:
    """The frozen encoder named by ``spec``, through its method's interface
    (:class:`~hvc.methods.base.Method`, :mod:`hvc.config.registry`).

    Args:
        spec: path of an ``encoder.pt`` (encoder state dict written by the train stage;
            the ``encoder.json`` beside it names the method and its input normalisation,
            see :func:`load_method_encoder`; without it, the default method's encoder);
            ``"random"``: the encoder of ``method`` at random initialisation (seeded by
            ``seed``); another name: a baseline encoder a method provides (its registry
            entry's ``encoders``, e.g. ``"imagenet"``: torchvision's ImageNet-supervised
            ResNet-18 in HVC's stride-8 backbone, downloaded to the torch hub cache on first use).
        method: the method of ``"random"`` (default: the registry's default method).
        p: the parameters, for encoders loaded from a file they name (``"semantic"``:
            ``propagation.semantic_checkpoint``, ``"authors"``: ``authors_checkpoint``).
    Raises:
        DataError: the file is missing, truncated, or holds another model's weights; for
            ``"imagenet"``, naming the torch hub cache file, when the weights are neither
            cached nor downloadable (no network) or the download is corrupt.
        ParamsError: an encoder name no registered method provides.
    """
    if spec == "random":
        cls = get_method(method or DEFAULT_METHOD)
        torch.manual_seed(seed)
        return _fed(cls.load_encoder(None, cls.encoder_spec()), cls.encoder_spec())
    provider = encoder_provider(spec)
    if provider is not None:
        return load_function(method_spec(provider).encoders[spec])(p, seed)
    path = Path(spec)
    if not path.suffix and not path.exists():
        raise ParamsError(f"--encoder {spec!r}: not an encoder.pt and not an encoder a method provides (random, {', '.join(_provided())})")
    hint = " (checkpoint.pt is the training state)" if path.name == "checkpoint.pt" else ""
    state = load_torch(path, "encoder checkpoint", "the encoder.pt written by `hvc train`", hint)
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict, found {type(state).__name__}")
    method_spec_ = _encoder_spec(path)
    if method_spec_ is not None and method_spec_.method != DEFAULT_METHOD:
        return load_method_encoder(path, state, method_spec_)
    _check_backbone_state(path, state)
    try:
        return build_encoder_for_propagation(state)
    except (ValueError, RuntimeError) as e:
        raise DataError(path, first_line(e)) from None


def encoder_method(spec: str, p: Params) -> str:
    """The method whose inference and propagation preset an encoder gets: ``p.method`` for
    ``"random"``, the providing method for a baseline name, the method in ``encoder.json``
    for a trained ``encoder.pt`` (the default method without one).

    Raises:
        DataError: a malformed ``encoder.json``.
    """
    if spec == "random":
        return p.method
    provider = encoder_provider(spec)
    if provider is not None:
        return provider
    found = _encoder_spec(Path(spec))
    return found.method if found is not None else DEFAULT_METHOD


def _provided() -> list[str]:
    from hvc.config.registry import method_names

    return sorted({name for m in method_names() for name in method_spec(m).encoders})


def _encoder_spec(path: Path) -> EncoderSpec | None:
    """The :class:`EncoderSpec` in ``encoder.json`` beside ``path``; None when there is none."""
    spec_path = path.with_name("encoder.json")
    if not spec_path.is_file():
        return None
    try:
        return EncoderSpec.from_dict(read_json(spec_path))
    except (TypeError, ValueError) as e:
        raise DataError(spec_path, f"not an encoder spec written by `hvc train`: {first_line(e)}") from None


class Renormalized(torch.nn.Module):
    """An encoder fed frames normalised for another input: ``forward(x, layer)`` takes
    (B, 3, H, W) frames normalised with ImageNet's RGB mean/std (what label propagation
    gives every encoder) and feeds ``encoder`` the same frames in its own colour space and
    normalisation (:class:`~hvc.methods.base.EncoderSpec`), e.g. Lab for LIIR."""

    def __init__(self, encoder: torch.nn.Module, spec: EncoderSpec) -> None:
        super().__init__()
        self.encoder, self.spec = encoder, spec
        mean, std = NORMALIZATION["imagenet"]
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised RGB → the encoder's features of ``layer``
        (its default layer when None or not one of its layers)."""
        rgb = (x * self.std + self.mean).clamp(0, 1)
        y = normalize_input(rgb, self.spec.normalization, self.spec.colour_space)
        return self.encoder(y, layer if layer in self.spec.layers else self.spec.default_layer)


def load_method_encoder(path: Path, state: dict, spec: EncoderSpec) -> torch.nn.Module:
    """The frozen encoder of a method other than HVC (``spec.method``) from its ``encoder.pt``
    state dict, fed in the colour space and normalisation of ``spec`` (:class:`Renormalized`).

    Raises:
        DataError: unknown method in ``encoder.json``, or the state dict does not fit its encoder.
    """
    try:
        encoder = get_method(spec.method).load_encoder(state, spec)
    except KeyError as e:
        raise DataError(path.with_name("encoder.json"), first_line(e)) from None
    except (ValueError, RuntimeError) as e:
        raise DataError(path, first_line(e)) from None
    return _fed(encoder, spec)


def _fed(encoder: torch.nn.Module, spec: EncoderSpec) -> torch.nn.Module:
    """``encoder`` in eval mode, fed ImageNet-normalised RGB (wrapped in :class:`Renormalized`
    unless that is its own input)."""
    encoder = encoder.eval()
    if (spec.normalization, spec.colour_space) == ("imagenet", "rgb"):
        return encoder
    return Renormalized(encoder, spec).eval()


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
    (1, 1024, h/8, w/8) for :func:`hvc.propagation.merged_encoder`.

    Raises:
        ParamsError: ``propagation.semantic_checkpoint`` is not set.
        DataError: the checkpoint is missing or not a MoCo/ResNet-50 checkpoint.
    """
    if p.propagation.semantic_checkpoint is None:
        raise ParamsError("the semantic encoder needs propagation.semantic_checkpoint (a MoCo-v1 ResNet-50 checkpoint)")
    return load_semantic_encoder(Path(p.propagation.semantic_checkpoint)).to(device)


def semantic_encoder(p: Params, seed: int = 0) -> torch.nn.Module:
    """The semantic encoder alone as an encoder (``encoder(x, layer)``, the layer ignored):
    :func:`semantic_features` on the CPU (the caller moves it). Raises as that."""
    return _AnyLayer(semantic_features(p, torch.device("cpu")))


class _AnyLayer(torch.nn.Module):
    """``forward(x, layer)`` of an encoder that has one output (the layer is ignored)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        return self.encoder(x)


def authors_encoder(p: Params, seed: int = 0) -> Backbone:
    """Our backbone with the authors' released weights of ``authors_checkpoint``.

    Raises:
        ParamsError: ``authors_checkpoint`` is not set.
        DataError: the file is missing or not an official HVC checkpoint.
    """
    if p.authors_checkpoint is None:
        raise ParamsError("the authors' weights need authors_checkpoint (the official hvc.pth)")
    return load_authors_encoder(Path(p.authors_checkpoint), p.propagation.feature_layer)
