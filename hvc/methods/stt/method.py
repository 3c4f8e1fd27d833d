"""STT behind the harness's method interface (:class:`hvc.methods.base.Method`).

Li & Liu, "Spatial-then-Temporal Self-Supervised Learning for Video Correspondence", CVPR
2023 ([P]); github.com/qianduoduolr/Spa-then-Temp ([C]) where [P] is silent. Two phases:

1. "spatial" (images): MoCo-style InfoNCE ([P] §3.1 Eq. 1; DetCo/MoCo v2 settings) of a
   standard ResNet-18 on RGB views, momentum key encoder and queue
   (:class:`~hvc.methods.stt.model.MoCo`). Skipped when ``stt.teacher_checkpoint`` gives
   the step-1 weights.
2. "temporal" (frame pairs): at its start the step-1 ResNet-18 becomes the frozen teacher
   (no gradient, eval mode, never updated) and the student's initialisation ([P] §3.1; [C]
   configs/train/train.py loads one checkpoint into both). Per batch ([C]
   framework.py ``forward_train``): drop one Lab colour channel of both frames; the
   student (Lab, strides (1, 2, 2, 4)) gives res3/res4/res5 of both frames in one call;
   L = Σ_l L_rec(c^l) (Eq. 7, res3 R = 12, res4 R = 6) + α L_lc^e (Eqs. 8-9, the res3
   correlation pooled 2x2 as target on high-entropy res4 queries) + β L_gc (Eqs. 2-3,
   res5 of student vs teacher on RGB), α = 1000, β = 50.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hvc.inputs import normalize_input
from hvc.methods.base import ClipCrop, DataSpec, EncoderSpec, Method, Phase, frozen
from hvc.methods.liir.colour import drop_colour_channel
from hvc.methods.liir.loss import window_valid
from hvc.methods.stt.loss import (
    entropy,
    entropy_correlation,
    entropy_mask,
    global_correlation,
    global_distillation_loss,
    local_correlation,
    local_distillation_loss,
    pooled_target,
    pyramid_reconstruction_loss,
)
from hvc.methods.stt.model import MoCo, ResNet18, STTEncoder
from hvc.methods.stt.params import STTParams

if TYPE_CHECKING:
    from hvc.config.params import Params

SPATIAL, TEMPORAL = 0, 1


class MoCoViews:
    """Picklable per-sample transform of the spatial phase: image (3, H, W) uint8 → {"view1",
    "view2": (3, S, S)} ImageNet-normalised RGB, two independent MoCo v2 augmentations
    (DetCo/MoCo v2: RandomResizedCrop(S, scale 0.2-1), colour jitter (0.4, 0.4, 0.4, 0.1)
    with p 0.8, grayscale p 0.2, Gaussian blur σ ∈ [0.1, 2] with p 0.5, horizontal flip).
    Draws use torch's global generator (seeded per sample by the stream)."""

    def __init__(self, size: int = 224, scale: tuple[float, float] = (0.2, 1.0)) -> None:
        self.size, self.scale = size, scale

    def _augment(self) -> Any:
        from torchvision.transforms import v2

        kernel = max(3, int(0.1 * self.size) // 2 * 2 + 1)
        return v2.Compose(
            [
                v2.RandomResizedCrop(self.size, scale=self.scale, antialias=True),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                v2.RandomGrayscale(p=0.2),
                v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
                v2.RandomHorizontalFlip(),
            ]
        )

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"STT spatial views need an image (3, H, W), got {tuple(image.shape)}")
        aug = self._augment()
        return {"view1": normalize_input(aug(image)), "view2": normalize_input(aug(image))}


def _data_spec(kind: str, transform: Any, batch_size: int | None, **kw: int) -> DataSpec:
    """A DataSpec with the phase's batch size (None: ``train.batch_size``)."""
    return DataSpec(kind, transform, batch_size=batch_size, **kw)


def load_teacher_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The step-1 ResNet-18 weights of a user's checkpoint, loaded weights-only.

    Accepted: a state dict, or one under "state_dict" or "model"; keys in torchvision's
    names, optionally prefixed by "module.", "encoder_q." (MoCo: only the query encoder is
    kept), "backbone." or "encoder."; "fc.*" keys are dropped.
    Raises:
        ParamsError: one line naming the file and the problem (missing, unreadable, not a
            ResNet-18).
    """
    from hvc.config.params import ParamsError

    where = f"stt.teacher_checkpoint {str(path)!r}"
    if not Path(path).is_file():
        raise ParamsError(f"{where}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ParamsError(f"{where}: not a weights-only PyTorch checkpoint ({type(err).__name__})") from None
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParamsError(f"{where}: holds no state dict of tensors")
    if any("encoder_q." in k for k in state):
        state = {k: v for k, v in state.items() if "encoder_q." in k}
    clean = {}
    for key, value in state.items():
        for prefix in ("module.", "encoder_q.", "backbone.", "encoder."):
            key = key[len(prefix) :] if key.startswith(prefix) else key
        if not key.startswith("fc."):
            clean[key] = value
    try:
        ResNet18("teacher").load_state_dict(clean)
    except RuntimeError as err:
        raise ParamsError(f"{where}: does not fit a ResNet-18 ({str(err).splitlines()[0].strip()})") from None
    return clean


class STT(Method):
    """Spatial-then-Temporal (CVPR 2023) as a trainable method of the harness.

    Batches: spatial phase ``{"view1", "view2": (B, 3, S, S)}`` ImageNet-normalised RGB;
    temporal phase ``{"frames": (B, 2, 3, S, S)}`` normalised Lab (reference, target) and
    ``{"rgb": (B, 2, 3, S, S)}`` the same crops as [0, 1] RGB (the teacher's input).
    Loss dicts: spatial ``loss``, ``accuracy``; temporal ``loss``, ``rec_res3``,
    ``rec_res4``, ``local``, ``global``, ``kept`` (share of queries distilled).

    Modules (all always present, so the state dict keys never change): ``moco`` (the
    step-1 trunk ``moco.trunk`` = the teacher, its head, key encoder and queue) and
    ``student``.

    Args:
        config: the ``stt`` section.
        teacher_state: step-1 weights (:func:`load_teacher_checkpoint`): loaded into the
            teacher now, and the spatial phase has share 0.
    """

    name = "stt"
    batch_kind = "clips"

    def __init__(self, config: STTParams | None = None, teacher_state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config = config or STTParams()
        c = self.config
        self.moco = MoCo(c.moco_hidden, c.moco_dim, c.moco_queue, c.moco_temperature)
        self.student = ResNet18("student")
        self.given_teacher = teacher_state is not None
        if teacher_state is not None:
            self.moco.trunk.load_state_dict(teacher_state)
        # 1 once the student was initialised from the step-1 trunk: part of the state dict,
        # so a checkpoint written before the temporal phase began still gets its copy
        self.register_buffer("student_initialised", torch.zeros((), dtype=torch.bool))
        self.phase = SPATIAL
        self._pending_keys: torch.Tensor | None = None

    @classmethod
    def build(cls, params: Params) -> STT:
        """STT of the ``stt`` section (and ``stt.teacher_checkpoint``'s weights when set).
        Raises ParamsError for an unusable checkpoint."""
        c = params.stt
        state = load_teacher_checkpoint(c.teacher_checkpoint) if c.teacher_checkpoint else None
        return cls(c, state)

    @property
    def teacher(self) -> ResNet18:
        """The step-1 ResNet-18 (trained in the spatial phase, frozen in the temporal one)."""
        return self.moco.trunk

    def phases(self) -> tuple[Phase, ...]:
        """("spatial", "views", share), ("temporal", "clips", 1 − share); share =
        ``stt.spatial_share``, or 0 with a given teacher checkpoint."""
        share = 0.0 if self.given_teacher else self.config.spatial_share
        return (Phase("spatial", "views", share), Phase("temporal", "clips", 1.0 - share))

    def phase_steps(self, total_steps: int) -> int:
        """Steps of the spatial phase in a run of ``total_steps``: round(total × share)."""
        return round(total_steps * self.phases()[0].share)

    def start_phase(self, phase: int) -> None:
        """Enter ``phase`` (0 spatial, 1 temporal). Spatial: the student (unused) requires no
        gradient. Temporal: the student starts from the
        step-1 trunk's weights (parameters and BN statistics), and the whole step-1 module
        (teacher, head, key encoder) is frozen: no gradient, eval mode (kept by
        :meth:`train`). On resume the checkpoint loaded afterwards overwrites the copy;
        when that checkpoint predates the copy (``student_initialised`` false), the first
        temporal step makes it (:meth:`initialise_student`).
        Raises ValueError for another phase."""
        if phase not in (SPATIAL, TEMPORAL):
            raise ValueError(f"STT has phases 0 (spatial) and 1 (temporal), got {phase!r}")
        self.phase = phase
        self._pending_keys = None
        self.student.requires_grad_(phase == TEMPORAL)  # only the trained modules require gradients
        if phase == TEMPORAL:
            self.initialise_student()
            for p in self.moco.parameters():
                p.requires_grad_(False)
                p.grad = None
            self.moco.eval()

    @torch.no_grad()
    def initialise_student(self) -> None:
        """Copy the step-1 trunk (parameters and BN statistics, in place) into the student,
        once (``student_initialised``)."""
        if not bool(self.student_initialised):
            self.student.load_state_dict(self.teacher.state_dict())
            self.student_initialised.fill_(True)

    def train(self, mode: bool = True) -> STT:
        """nn.Module.train, but the step-1 module stays in eval mode in the temporal phase."""
        super().train(mode)
        if self.phase == TEMPORAL:
            self.moco.eval()
        return self

    def data_spec(self, params: Params, phase: int = 0) -> DataSpec:
        """Spatial: two MoCo views of one image, ``stt.spatial_batch_size`` per step.
        Temporal: 2-frame clips ``stt.frame_gap`` apart ([C] clip_length=2, step 1), one
        RandomResizedCrop (area 0.6-1, aspect 1.5-2) + flip for both frames, 256², Lab and
        RGB (:class:`~hvc.methods.base.ClipCrop`), ``stt.temporal_batch_size`` per step."""
        c = self.config
        if phase == SPATIAL:
            return _data_spec("views", MoCoViews(c.view_size or params.train.crop_size, c.view_scale), c.spatial_batch_size)
        size = c.crop_size or params.train.crop_size
        if size % 32:
            from hvc.config.params import ParamsError

            raise ParamsError(f"method stt: frames of {size} pixels (stt.crop_size, else train.crop_size): must be a multiple of 32 (the res5 stride)")
        crop = ClipCrop(size, c.crop_scale, c.crop_ratio, c.flip, normalization="lab", colour_space="lab", keep_rgb=True)
        return _data_spec("clips", crop, c.temporal_batch_size, clip_length=2, frame_gap=c.frame_gap)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss of the current phase (:meth:`spatial_loss` or :meth:`temporal_loss`)."""
        return self.spatial_loss(batch) if self.phase == SPATIAL else self.temporal_loss(batch)

    def spatial_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """InfoNCE (Eq. 1) of view1's query against view2's key and the queue.
        Raises ValueError for views that are not (B, 3, S, S) of one shape."""
        v1, v2 = batch["view1"], batch["view2"]
        if v1.dim() != 4 or v1.shape != v2.shape or v1.shape[1] != 3:
            raise ValueError(f"STT spatial batch needs view1/view2 (B, 3, S, S), got {tuple(v1.shape)}, {tuple(v2.shape)}")
        loss, accuracy, keys = self.moco.loss(v1, v2)
        self._pending_keys = keys
        return {"loss": loss, "accuracy": accuracy}

    def temporal_loss(self, batch: dict[str, torch.Tensor], channel: int | None = None) -> dict[str, torch.Tensor]:
        """L = Σ_l w_l L_rec(c^l) + α L_lc^e + β L_gc (Eqs. 7-10) of a batch of pairs.

        Args:
            batch: "frames" (B, 2, 3, S, S) normalised Lab, "rgb" (B, 2, 3, S, S) [0, 1].
            channel: the Lab channel dropped (1 or 2); None draws one for the batch.
        Raises:
            ValueError: frames/rgb not (B, 2, 3, S, S) with S a multiple of 32.
        """
        c = self.config
        frames, rgb = batch["frames"], batch["rgb"]
        if frames.dim() != 5 or frames.shape[1:3] != (2, 3) or rgb.shape != frames.shape or frames.shape[-1] % 32:
            raise ValueError(f"STT temporal batch needs frames and rgb (B, 2, 3, S, S), S % 32 == 0, got {tuple(frames.shape)}, {tuple(rgb.shape)}")
        self.initialise_student()
        b, size = frames.shape[0], frames.shape[-1]
        inputs, colour, _ = drop_colour_channel(frames, channel)
        feats = self.student(inputs.flatten(0, 1), ("layer2", "layer3", "layer4"))  # one call: BN over both frames ([C])
        pairs = {k: v.view(b, 2, *v.shape[1:]) for k, v in feats.items()}
        (r3, t3), (r4, t4), (r5, t5) = [(pairs[k][:, 0], pairs[k][:, 1]) for k in ("layer2", "layer3", "layer4")]
        (rad0, rad1), terms = c.radii, {}
        c0, c1 = local_correlation(t3, r3, rad0), local_correlation(t4, r4, rad1)
        terms["rec_res3"] = pyramid_reconstruction_loss(c0, colour[:, 0], colour[:, 1], rad0, size // t3.shape[-1], c.rec_scale)
        terms["rec_res4"] = pyramid_reconstruction_loss(c1, colour[:, 0], colour[:, 1], rad1, size // t4.shape[-1], c.rec_scale)
        mask = self.entropy_selection(t4, r4, c1)
        target = pooled_target(c0, tuple(t3.shape[-2:]), rad0, rad1, c.pool_target)
        terms["local"] = local_distillation_loss(c1, target, mask.flatten(1), t4.shape[-2] * t4.shape[-1])
        terms["global"] = global_distillation_loss(global_correlation(t5, r5), self.teacher_correlation(rgb))
        total = c.rec_weights[0] * terms["rec_res3"] + c.rec_weights[1] * terms["rec_res4"]
        total = total + c.local_weight * terms["local"] + c.global_weight * terms["global"]
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}, "kept": mask.mean()}

    def entropy_selection(self, target: torch.Tensor, ref: torch.Tensor, corr1: torch.Tensor) -> torch.Tensor:
        """The entropy mask m (Eqs. 8-9) of the res4 queries, (B, h, w), from
        ``stt.entropy_source`` and ``stt.entropy_mask``."""
        c = self.config
        if c.entropy_source == "official":
            ent = entropy(entropy_correlation(target.detach(), ref.detach(), c.radii[1]))
        else:
            ent = entropy(corr1.detach(), window_valid(*target.shape[-2:], c.radii[1], target.device))
        return entropy_mask(ent.view(target.shape[0], *target.shape[-2:]), c.entropy_keep, c.entropy_mask)

    @torch.no_grad()
    def teacher_correlation(self, rgb: torch.Tensor) -> torch.Tensor:
        """a^t (Eq. 2): the frozen teacher's global correlation of the pair's res5 maps,
        RGB with ImageNet mean/std ([C] img_norm_cfg), τ = ``stt.teacher_temperature``."""
        self.teacher.eval()
        f = self.teacher(normalize_input(rgb.flatten(0, 1), "imagenet"))["layer4"]
        f = f.view(rgb.shape[0], 2, *f.shape[1:])
        return global_correlation(f[:, 1], f[:, 0], self.config.teacher_temperature, self.config.teacher_normalize)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Spatial phase: enqueue the step's keys and update the key encoder by EMA (MoCo's
        order across steps). Temporal phase: nothing (the teacher is never updated)."""
        if self.phase != SPATIAL or self._pending_keys is None:
            return {}
        self.moco.enqueue(self._pending_keys)
        self._pending_keys = None
        self.moco.momentum_update(self.config.moco_momentum)
        return {"queue_ptr": float(self.moco.queue_ptr)}

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        """Half-period cosine from the phase's rate to 0 over the phase's steps ([P] §4.1
        temporal: 1e-4; DetCo/MoCo v2 spatial: 0.03); ``step`` and ``total_steps`` count
        in the current phase (the training loop's contract). ``base_lr`` is not used."""
        lr = self.config.spatial_lr if self.phase == SPATIAL else self.config.temporal_lr
        n = max(total_steps, 1)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(max(step, 0), n) / n))

    def make_optimizer(self, params: Params, fused: bool = False) -> torch.optim.Optimizer:
        """Spatial: SGD (momentum 0.9, weight decay 1e-4, DetCo/MoCo v2) over the step-1
        trunk and head. Temporal: Adam (β 0.9, 0.999, [C] configs/train/train.py) over the
        student, ``train.weight_decay``."""
        c = self.config
        if self.phase == SPATIAL:
            trainable = list(self.moco.trunk.parameters()) + list(self.moco.head.parameters())
            return torch.optim.SGD(trainable, lr=c.spatial_lr, momentum=c.spatial_momentum, weight_decay=c.spatial_weight_decay)
        return torch.optim.Adam(self.student.parameters(), lr=c.temporal_lr, betas=(0.9, 0.999), weight_decay=params.train.weight_decay, fused=fused)

    def encoder(self) -> nn.Module:
        """The student as :class:`STTEncoder` (shared modules): res4 = "layer3" at stride 8."""
        return STTEncoder(self.student)

    @classmethod
    def encoder_spec(cls) -> EncoderSpec:
        """Lab input, mean (50, 0, 0) std (50, 127, 127) ([C] configs/test/base_data.py),
        stride 8, res4 ("layer3") by default, res3 ("layer2", stride 4) available."""
        return EncoderSpec(method=cls.name, normalization="lab", colour_space="lab", stride=8, layers=STTEncoder.LAYERS, default_layer="layer3")

    @classmethod
    def load_encoder(cls, state: dict[str, torch.Tensor] | None, spec: EncoderSpec) -> nn.Module:
        """A frozen :class:`STTEncoder` in eval mode from ``encoder.pt``'s state dict
        (``state=None``: random). Raises ValueError when it does not fit."""
        if spec.method != cls.name:
            raise ValueError(f"encoder spec is for method {spec.method!r}, not {cls.name!r}")
        if state is not None:
            state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
        return frozen(STTEncoder(), state, "the STT encoder")


__all__ = ["STT", "MoCoViews", "Phase", "load_teacher_checkpoint"]

METHOD = STT
