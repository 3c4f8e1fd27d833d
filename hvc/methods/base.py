"""What every trainable correspondence method gives the harness (training loop, checkpoints,
label propagation), and the input normalisations they share.

A method is an ``nn.Module`` subclass of :class:`Method`, named in the registry
(:mod:`hvc.config.registry`). The harness (``hvc.train``):

1. builds it with ``Method.build(params)`` (weights seeded by ``params.seed`` beforehand);
   the method reads its own section (``params.<name>``) and the loop's keys (``params.train``);
2. runs its training phases (:meth:`Method.phases`) in order, each for its share of the
   budget (steps, or seconds under ``train.max_seconds``); at the start of phase i it calls
   :meth:`Method.start_phase` (also on resume, before the checkpoint is loaded), builds a
   fresh optimizer (:meth:`Method.make_optimizer`) and streams batches of the phase's
   :meth:`Method.data_spec` (:class:`DataSpec`: two views of an image, or a clip of T frames
   of a video, the per-sample transform and, optionally, the phase's batch size);
3. per step: sets the learning rate of :meth:`Method.lr_at`, ``losses = method(batch)``
   (``forward`` calls :meth:`Method.loss`, so a DistributedDataParallel wrapper sees every
   trained module inside one forward), back-propagates ``losses["loss"]``, steps the
   optimizer, then calls :meth:`Method.after_step` (EMA updates, memory queues,
   re-clustering) and logs every loss term and every value it returns;
4. at the end saves ``encoder().state_dict()`` as ``encoder.pt``, :meth:`Method.encoder_spec`
   (how to feed that encoder) as ``encoder.json``, and each of
   :meth:`Method.inference_modules` as ``<name>.pt`` (what the method's own inference needs
   besides the encoder).

Batches are dicts of tensors, the per-sample transform's dict with a leading batch
dimension: ``{"view1", "view2", "box1", "box2"}`` for HVC, ``{"frames": (B, T, 3, S, S), ...}``
for clip methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from hvc.inputs import COLOUR_SPACE_OF, NORMALIZATION, normalize_input

if TYPE_CHECKING:
    from hvc.config.params import Params

BatchKind = Literal["views", "clips"]
BATCH_KINDS: tuple[str, ...] = ("views", "clips")
ColourSpace = Literal["rgb", "lab"]

@torch.no_grad()
def ema_parameters_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online for every parameter, in place (buffers are
    left to the caller): the EMA of a target or key encoder (HVC Eq. 1; MoCo-style key
    encoders such as LIIR's). ``target`` and ``online`` have the same parameters, in order."""
    params = list(target.parameters())
    torch._foreach_mul_(params, momentum)
    torch._foreach_add_(params, list(online.parameters()), alpha=1.0 - momentum)


def frozen(module: nn.Module, state: dict[str, torch.Tensor] | None, what: str) -> nn.Module:
    """``module`` with ``state`` loaded (None: as initialised), no parameter requiring a
    gradient, in eval mode: how every method's ``load_encoder`` (and inference modules)
    hand back a frozen module. Raises ValueError naming ``what`` when the state dict does
    not fit."""
    if state is not None:
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"state dict does not fit {what}: {str(err).splitlines()[0]}") from None
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class ClipCrop:
    """Callable: clip (T, 3, H, W) uint8 → ``{"frames": (T, 3, S, S) float}``, the frames in
    the colour space and normalisation given (:func:`normalize_input`), plus, with
    ``keep_rgb``, ``"rgb"``: the same crops as [0, 1] RGB (e.g. a frozen RGB teacher).

    One spatial transform for every frame of the clip: with ``scale=None`` the whole frame
    resized to S x S (MAST/LIIR: github.com/shasha521/LIIR_pytorch, 256x256 resize); else a
    RandomResizedCrop of area fraction ``scale`` and aspect ``ratio`` (e.g. Spa-then-Temp:
    github.com/qianduoduolr/Spa-then-Temp configs/train, area 0.6-1) and, with ``flip``, a
    horizontal flip with probability 1/2. Draws use torch's global generator (the stream
    seeds it per sample). Picklable, for loader workers.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] | None = None,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = False,
        normalization: str = "imagenet",
        colour_space: str | None = None,
        keep_rgb: bool = False,
    ) -> None:
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip
        self.normalization, self.colour_space, self.keep_rgb = normalization, colour_space, keep_rgb

    def __call__(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        from torchvision.transforms import v2

        S = [self.size, self.size]
        if self.scale is None:
            out = v2.functional.resize(clip, S, antialias=True)
        else:
            crop = v2.RandomResizedCrop(self.size, scale=self.scale, ratio=self.ratio, antialias=True)
            box = crop.make_params([clip])
            out = v2.functional.resized_crop(clip, box["top"], box["left"], box["height"], box["width"], S, antialias=True)
        if self.flip and bool(torch.rand(()) < 0.5):
            out = out.flip(-1)
        result = {"frames": normalize_input(out, self.normalization, self.colour_space)}
        if self.keep_rgb:
            result["rgb"] = out.float() / 255.0
        return result


@dataclass(frozen=True)
class EncoderSpec:
    """How to feed a method's frozen encoder (written as ``encoder.json`` beside ``encoder.pt``).

    Attributes:
        method: the method's registry name (which architecture ``encoder.pt`` holds).
        normalization: key of :data:`NORMALIZATION` applied to the input frames.
        colour_space: ``"rgb"`` or ``"lab"`` (converted before normalising).
        stride: output stride of the features (input pixels per feature cell).
        layers: names the encoder's ``forward(x, layer)`` accepts, e.g. ("layer3", "layer4").
        default_layer: the layer matched when propagation does not choose one.
    """

    method: str
    normalization: str = "imagenet"
    colour_space: str = "rgb"
    stride: int = 8
    layers: tuple[str, ...] = ("layer3", "layer4")
    default_layer: str = "layer3"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATION:
            raise ValueError(f"normalization must be one of {sorted(NORMALIZATION)}, got {self.normalization!r}")
        if self.colour_space != COLOUR_SPACE_OF[self.normalization]:
            raise ValueError(f"normalization {self.normalization!r} does not fit colour space {self.colour_space!r}")
        if self.default_layer not in self.layers:
            raise ValueError(f"default_layer {self.default_layer!r} is not one of {self.layers}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (layers as a list)."""
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        """Inverse of :meth:`to_dict`. Raises ValueError (unknown keys, bad values)."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown encoder spec keys {sorted(unknown)}")
        return cls(**{**d, "layers": tuple(d.get("layers", cls.layers))})


@dataclass(frozen=True)
class Phase:
    """One training phase of a method.

    Attributes:
        name: what the phase is (``"intra"``, ``"spatial"``, ...), for logs and ``train.json``.
        kind: ``"views"`` (decoded images) or ``"clips"`` (frames of a video) it trains on.
        share: its fraction of the training budget: of the steps (``train.max_steps``, or
            ``train.epochs`` passes of the phase's own stream), and of the wall time under
            ``train.max_seconds``. A phase of share 0 is skipped.
    """

    name: str
    kind: str
    share: float

    def __post_init__(self) -> None:
        if self.kind not in BATCH_KINDS:
            raise ValueError(f"phase {self.name!r}: kind must be one of {BATCH_KINDS}, got {self.kind!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"phase {self.name!r}: share must be in [0, 1], got {self.share!r}")


@dataclass(frozen=True)
class DataSpec:
    """What one training sample is, for the stream the training loop builds
    (:func:`hvc.data.shards.make_stream`).

    Attributes:
        kind: ``"views"``: ``transform`` gets one decoded image, (3, H, W) uint8;
            ``"clips"``: ``transform`` gets ``clip_length`` frames of one video,
            (T, 3, H, W) uint8, frames ``s, s + frame_gap, ..., s + (T-1) * frame_gap`` of
            the video for a random start ``s``.
        transform: picklable callable, sample → dict of tensors (one training example; the
            stream stacks them into a batch). Its random draws use torch's global generator,
            which the stream seeds per sample from (seed, epoch, sample key): reproducible.
        clip_length: T, frames per clip (clips only).
        frame_gap: index step between consecutive clip frames (clips only; 1 = adjacent).
        batch_size: global batch of the phase; None = ``train.batch_size``.
    """

    kind: str
    transform: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    clip_length: int = 1
    frame_gap: int = 1
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in BATCH_KINDS:
            raise ValueError(f"kind must be one of {BATCH_KINDS}, got {self.kind!r}")
        if self.clip_length < 1 or self.frame_gap < 1:
            raise ValueError(f"clip_length and frame_gap must be >= 1, got {self.clip_length}, {self.frame_gap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")

    @property
    def span(self) -> int:
        """Frames of the video one clip spans, (T - 1) * gap + 1 (1 for views)."""
        return (self.clip_length - 1) * self.frame_gap + 1 if self.kind == "clips" else 1


class Method(nn.Module):
    """Base class of a trainable self-supervised correspondence method.

    Subclasses set :attr:`name` (their registry name) and :attr:`batch_kind` and implement
    :meth:`build`, :meth:`data_spec`, :meth:`loss`, :meth:`encoder`, :meth:`encoder_spec`
    and :meth:`load_encoder`; they may override :meth:`phases`, :meth:`start_phase`,
    :meth:`after_step`, :meth:`make_optimizer`, :meth:`lr_at` and
    :meth:`inference_modules`. The state dict of the module is what the training checkpoint
    stores (loaded weights-only: tensors and plain containers); keep its keys stable.
    """

    name: ClassVar[str] = ""
    batch_kind: ClassVar[str] = "views"

    @classmethod
    def build(cls, params: Params) -> Method:
        """A freshly initialised method from the validated parameters (the caller seeds
        torch first). Raises ParamsError for settings the method cannot use."""
        raise NotImplementedError

    def phases(self) -> tuple[Phase, ...]:
        """The training phases, in order (shares sum to 1). Default: one phase of
        :attr:`batch_kind`."""
        return (Phase("train", self.batch_kind, 1.0),)

    def start_phase(self, phase: int) -> None:
        """Called before the first step of phase ``phase`` (index into :meth:`phases`), and
        when a run resumes inside it, before the checkpoint's state is loaded (so what is
        set up here is then overwritten by the saved state). Default: nothing."""

    def data_spec(self, params: Params, phase: int = 0) -> DataSpec:
        """The training sample of phase ``phase`` (its ``kind`` must be the phase's)."""
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms of one batch (tensors on the method's device). Must hold ``"loss"``,
        the scalar to back-propagate; every other entry (scalar tensors) is logged."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """= :meth:`loss` (the training loop calls the module, possibly DDP-wrapped)."""
        return self.loss(batch)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called after optimizer step ``step`` (0-based) of ``total_steps``: EMA updates,
        memory queues, re-clustering. Returns scalars to log (e.g. ``{"momentum": m}``)."""
        return {}

    def make_optimizer(self, params: Params, fused: bool = False) -> torch.optim.Optimizer:
        """The optimizer of the current phase (called after each :meth:`start_phase`): by default Adam over the parameters that require gradients, with
        ``train.lr`` and ``train.weight_decay``. ``fused``: PyTorch's fused kernel (CUDA)."""
        t = params.train
        trainable = [q for q in self.parameters() if q.requires_grad]
        return torch.optim.Adam(trainable, lr=t.lr, weight_decay=t.weight_decay, fused=fused)

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        """Learning rate of step ``step`` (0-based, counted from the start of the current
        phase) of the phase's ``total_steps``; the loop sets it before each step.
        Default: constant ``base_lr`` (``train.lr``)."""
        return base_lr

    def inference_modules(self) -> dict[str, nn.Module]:
        """Modules besides the encoder that the method's own inference needs (e.g. a mask
        decoder); each is saved as ``<name>.pt`` beside ``encoder.pt``. Default: none."""
        return {}

    @classmethod
    def load_inference_modules(cls, states: dict[str, dict[str, torch.Tensor]]) -> dict[str, nn.Module]:
        """The frozen modules of :meth:`inference_modules` from their state dicts (``{}``:
        randomly initialised ones); handed to the method's own inference with the encoder.
        Raises ValueError when one does not fit. Default: none."""
        return {}

    def encoder(self) -> nn.Module:
        """The module label propagation runs, frozen: ``encoder(x, layer)`` maps the
        normalised input (B, 3, H, W) to features (B, C, H/stride, W/stride) for each
        ``layer`` of :meth:`encoder_spec`. Its state dict is saved as ``encoder.pt``."""
        raise NotImplementedError

    @classmethod
    def encoder_spec(cls) -> EncoderSpec:
        """Normalisation, colour space, stride and layers of :meth:`encoder`."""
        raise NotImplementedError

    @classmethod
    def load_encoder(cls, state: dict[str, torch.Tensor] | None, spec: EncoderSpec) -> nn.Module:
        """The frozen encoder (eval mode) of ``encoder.pt``'s state dict, without building
        the whole method (label propagation); ``state=None``: randomly initialised.
        Raises ValueError when the state dict does not fit the architecture."""
        raise NotImplementedError
