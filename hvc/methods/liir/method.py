"""LIIR behind the harness's method interface (:class:`hvc.methods.base.Method`).

Training (Li et al., CVPR 2022, §3.2-3.3; github.com/shasha521/LIIR_pytorch main_dis.py,
models/mast_momen.py, models/colorizer_momen.py), per batch of (reference, query) pairs:

1. drop one Lab colour channel (a or b) of both frames; the dropped channel is the target;
2. f_r, f_q = φ(I_r, P), φ(I_q, P) (:class:`~hvc.methods.liir.model.LIIREncoder`);
3. A = window softmax of f_q · f_r (Eq. 1, radius 6 at stride 4);
4. phase 1: L = L_res(A · Y_r, Y_q) (Eqs. 2-3);
   phase 2 (``phase2_design="paper"``): A′ additionally normalised by the memory-bank
   negatives of other videos (Eq. 4), L = L_res(A′ · Y_r, Y_q) (Eq. 5) + L_com(Ã(A), A)
   (Eq. 8);
   phase 2 (``phase2_design="code"``, the code's main_dis.py and mast_momen.py): L =
   L_res(A · Y_r, Y_q) + 0.5 · L_res(A′₈ · Y_r↓, Y_q↓) + L_com(Ã(A), A), A′₈ the affinity
   of a separate stride-8 head of layer4 (query through the head, reference through its
   EMA copy) normalised with the bank negatives, Y↓ the labels resized to stride 8;
5. after the optimizer step (phase 2): EMA update of the key encoder (paper design) or of
   the key head (code design), which encodes the reference frames (paper: with the
   shifted position map P̄, §3.2, no gradient) and pushes 4 random points of each into
   the FIFO bank with its video id.

The window radii are scaled with the training pair size (6 cells at 256 pixels,
:meth:`LIIRConfig.radius_at`); window cells outside the frame are masked
(``train_border="mask"``) or count as zeros as in the code (``"zero"``).

The bank holds key-encoder features computed once, when pushed (MoCo-style, the "moving
average strategy" of §3.3), rather than re-encoding 1,440 stored frames each step.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hvc.methods.base import ClipCrop, DataSpec, EncoderSpec, Method, Phase, ema_parameters_, frozen
from hvc.methods.liir.colour import drop_colour_channel
from hvc.methods.liir.config import PHASE1, PHASE2, PHASES, LIIRConfig
from hvc.methods.liir.loss import (
    MemoryBank,
    border_valid,
    compactness_loss,
    inter_intra_affinity,
    negative_logits,
    reconstruct,
    reconstruction_loss,
    sample_points,
    subsample_labels,
    window_logits,
    window_softmax,
)
from hvc.methods.liir.model import (
    FEATURE_CHANNELS,
    HEAD_CHANNELS,
    LAYERS,
    POSITION_SHAPE,
    STRIDE,
    LIIREncoder,
    random_shift,
    stride8_head,
)

if TYPE_CHECKING:
    from hvc.config.params import Params


class PairTransform:
    """Picklable per-sample transform: a clip (T, 3, H, W) uint8 of consecutive frames →
    {"frames": (2, 3, S, S)} normalised Lab (reference, query).

    The query is frame g of the clip, g drawn from ``frame_gaps`` with ``frame_gap_probs``
    by torch's global generator (MAST/LIIR sampler, [U] YouTubeVOSTrain.py: gaps 2, 5, 8 with
    p 0.4, 0.4, 0.2); the reference is frame 0. The pair is resized to S × S, no crop or flip
    ([U] YTVOSTrainLoader.py ``cv2.resize(image, (256, 256))``), and converted to Lab with
    mean (50, 0, 0) and std (50, 127, 127) (:class:`hvc.methods.base.ClipCrop`).
    Raises ValueError when the clip is shorter than the largest gap + 1.
    """

    def __init__(self, config: LIIRConfig) -> None:
        self.gaps = config.frame_gaps
        self.probs = torch.tensor(config.frame_gap_probs, dtype=torch.float64)
        self.resize = ClipCrop(config.image_size, scale=None, normalization="lab", colour_space="lab")

    def __call__(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        if clip.dim() != 4 or clip.shape[1] != 3 or clip.shape[0] <= max(self.gaps):
            raise ValueError(f"LIIR needs clips (T > {max(self.gaps)}, 3, H, W), got {tuple(clip.shape)}")
        gap = self.gaps[int(torch.multinomial(self.probs, 1))]
        return self.resize(clip[[0, gap]])


class LIIR(Method):
    """LIIR (CVPR 2022) as a trainable method of the harness.

    Batch: ``{"frames": (B, T, 3, S, S)}`` normalised Lab clips (frame 0 = reference, frame
    T-1 = query), and in phase 2 ``"video_id": (B,)`` int64 (same-video bank entries are
    not negatives). Loss dict: ``loss``; ``rec`` (phase 1 and the code design: A's
    reconstruction; the paper's phase 2: A′'s); phase 2 also ``compact``, ``negatives``
    (mean usable bank points per clip), ``rec_intra`` (paper design, when its weight is
    non-zero) or ``rec_inter`` (code design: the stride-8 head's A′₈ reconstruction).

    Args:
        config: :class:`LIIRConfig` (all numbers with sources).
        phase: 1 (intra-video warm-up) or 2 (inter-video + compactness).
        batch_size: training pairs per step, to turn steps into samples for the LR schedule
            (default: the phase's batch size).
        phase2_share: when set, the harness's training loop runs both phases in one run:
            phase 1 for the first ``round(total_steps * (1 - phase2_share))`` steps, then
            phase 2 from those weights with a fresh Adam (:meth:`phases`); None keeps
            ``phase`` throughout.
    Raises:
        ValueError: phase not 1 or 2, or phase2_share outside [0, 1].
    """

    name = "liir"
    batch_kind = "clips"

    def __init__(
        self, config: LIIRConfig | None = None, phase: int = 1, batch_size: int | None = None, phase2_share: float | None = None
    ) -> None:
        super().__init__()
        self.config = config or LIIRConfig()
        if phase not in PHASES:
            raise ValueError(f"LIIR phase must be 1 or 2, got {phase!r}")
        if phase2_share is not None and not 0.0 <= phase2_share <= 1.0:
            raise ValueError(f"LIIR phase2_share must be in [0, 1], got {phase2_share!r}")
        self.phase = phase
        self.phase2_share = phase2_share
        self.batch_size = batch_size or self.config.phase(phase).batch_size
        self.online = LIIREncoder()
        self.key = copy.deepcopy(self.online)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.code_design = self.config.phase2_design == "code"
        if self.code_design:  # the code's stride-8 head and its EMA copy (mast_momen.py conv_semantic, conv_semantic_k)
            self.head = stride8_head()
            self.head_key = copy.deepcopy(self.head)
            for p in self.head_key.parameters():
                p.requires_grad_(False)
        channels = HEAD_CHANNELS if self.code_design else FEATURE_CHANNELS
        self.bank = MemoryBank(self.config.bank_frames, self.config.bank_points, channels)
        # 0 until the key encoder was copied from the online one (phase 2 starts from
        # phase-1 weights loaded after construction).
        self.register_buffer("key_synced", torch.zeros((), dtype=torch.bool))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def build(cls, params: Params) -> LIIR:
        """LIIR of the parameters: :class:`LIIRConfig` with frames resized to ``train.crop_size``,
        the gaps, bank size, learning rates, per-phase batch sizes, phase-2 design, border
        handling and radius scaling of the ``liir`` section, the phases split by
        ``liir.phase2_share``.

        Raises:
            ParamsError: ``train.crop_size`` is not a multiple of the stride 4.
        """
        from hvc.config.params import ParamsError

        q, batch = params.liir, params.train.batch_size
        try:
            config = LIIRConfig(
                image_size=params.train.crop_size,
                frame_gaps=tuple(q.frame_gaps),
                frame_gap_probs=tuple(q.frame_gap_probs),
                bank_frames=q.bank_frames,
                train_radius_size=256 if q.scale_radius else None,
                train_border=q.border,
                phase2_design=q.phase2_design,
                phase1=dataclasses.replace(PHASE1, lr=q.lr1, batch_size=q.batch_size1),
                phase2=dataclasses.replace(PHASE2, lr=q.lr2, batch_size=q.batch_size2),
            )
        except ValueError as err:
            raise ParamsError(f"method liir: {err} (train.crop_size, liir section)") from None
        return cls(config, phase=1, batch_size=batch, phase2_share=q.phase2_share)

    def phase1_steps(self, total_steps: int) -> int:
        """Steps of phase 1 in a run of ``total_steps`` that holds both phases:
        ``round(total_steps * (1 - phase2_share))`` (all of them when ``phase2_share`` is None).
        The training loop splits a step budget this way (:meth:`phases`)."""
        if self.phase2_share is None:
            return total_steps
        return round(total_steps * (1.0 - self.phase2_share))

    def phases(self) -> tuple[Phase, ...]:
        """Phase 1 (intra-video, share 1 - ``phase2_share``) then phase 2 (inter-video +
        compactness, share ``phase2_share``), both on clips, the second from the first's
        weights with a fresh Adam (the authors' phase 2 is a new run loading phase 1's
        weights, [U] README step 2 ``--resume``). Without ``phase2_share``: the phase given
        at construction alone."""
        if self.phase2_share is None:
            return (Phase(f"phase{self.phase}", "clips", 1.0),)
        return (Phase("phase1", "clips", 1.0 - self.phase2_share), Phase("phase2", "clips", self.phase2_share))

    def start_phase(self, phase: int) -> None:
        """Enter phase ``phase`` (index into :meth:`phases`)."""
        if self.phase2_share is not None:
            self.phase = PHASES[phase]

    def data_spec(self, params: Params, phase: int = 0) -> DataSpec:
        """Clips of max(gap) + 1 consecutive frames, reduced to one (reference, query) pair
        by :class:`PairTransform`; ``batch_size`` is the pairs per step of training phase
        ``phase`` (0: the intra-video warm-up, 1: phase 2; [P] §3.3: 32, then 12).
        Raises ValueError for another phase."""
        if phase not in (0, 1):
            raise ValueError(f"LIIR has training phases 0 and 1, got {phase!r}")
        size = self.config.phase(PHASES[phase]).batch_size
        return DataSpec("clips", PairTransform(self.config), clip_length=max(self.config.frame_gaps) + 1, frame_gap=1, batch_size=size)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """LIIR loss of one batch (phase 1: Eqs. 1-3; phase 2: Eqs. 4, 5, 8, or the code's
        design, module docstring).

        Raises:
            ValueError: ``frames`` is not (B, T >= 2, 3, S, S), or phase 2 without
                ``video_id`` (B,).
        """
        cfg, phase = self.config, self.config.phase(self.phase)
        frames = batch["frames"]
        if frames.dim() != 5 or frames.shape[1] < 2 or frames.shape[2] != 3:
            raise ValueError(f"LIIR batch 'frames' must be (B, T >= 2, 3, S, S), got {tuple(frames.shape)}")
        pair = torch.stack([frames[:, 0], frames[:, -1]], dim=1)
        inputs, target, _ = drop_colour_channel(pair)
        x_ref, x_query = inputs[:, 0], inputs[:, 1]
        y_ref, y_query = target[:, 0], target[:, 1]
        # Two forward calls, as the code (models/mast_momen.py): BN statistics per frame set.
        trunk_query = self.online(x_query, "layer4")
        trunk_ref = self.online(x_ref, "layer4")
        f_query, f_ref = self.online.post_convolution(trunk_query), self.online.post_convolution(trunk_ref)
        radius = cfg.radius_at(cfg.train_radius, frames.shape[-1])
        logits, valid = window_logits(f_query, f_ref, radius)
        valid = border_valid(valid, cfg.train_border)
        affinity = window_softmax(logits, valid)
        labels = subsample_labels(y_ref, cfg.label_stride)
        rec = reconstruction_loss(reconstruct(affinity, labels, radius), y_query, cfg.rec_loss, cfg.loss_scale)
        if not phase.inter:
            terms, total = {"rec": rec}, rec
        else:
            video_id = batch.get("video_id")
            if video_id is None or video_id.shape != (frames.shape[0],):
                raise ValueError("LIIR phase 2 needs batch 'video_id' of shape (B,) to keep same-video bank entries out of the negatives")
            if self.code_design:
                terms, total = self._code_phase2(rec, trunk_query, trunk_ref, y_ref, y_query, video_id)
            else:
                terms, total = self._paper_phase2(rec, logits, valid, f_query, labels, y_query, radius, video_id)
                self._pending = (x_ref.detach(), video_id.detach())
        if phase.compact:
            terms["compact"] = compactness_loss(
                affinity, radius, cfg.compact_peaks, cfg.compact_fwhm, cfg.compact_gate, cfg.rec_loss, cfg.loss_scale
            )
            total = total + cfg.compact_weight * terms["compact"]
        return {"loss": total, **terms}

    def _paper_phase2(self, rec, logits, valid, f_query, labels, y_query, radius, video_id) -> tuple[dict, torch.Tensor]:
        """Phase 2 of the paper: L_res of A′ (Eq. 4, window logits normalised with the bank
        negatives) × ``inter_weight``, plus ``rec`` (A's L_res) × ``intra_weight_phase2``
        when that weight is not 0. → (terms, total)."""
        cfg = self.config
        negs, neg_valid = self.bank.negatives(video_id)
        inter = inter_intra_affinity(logits, valid, negative_logits(f_query, negs), neg_valid)
        terms = {"rec": reconstruction_loss(reconstruct(inter, labels, radius), y_query, cfg.rec_loss, cfg.loss_scale)}
        total = cfg.inter_weight * terms["rec"]
        if cfg.intra_weight_phase2:
            terms["rec_intra"] = rec
            total = total + cfg.intra_weight_phase2 * rec
        terms["negatives"] = neg_valid.sum(dim=1).float().mean().detach()
        return terms, total

    def _code_phase2(self, rec, trunk_query, trunk_ref, y_ref, y_query, video_id) -> tuple[dict, torch.Tensor]:
        """Phase 2 of the code (main_dis.py ``compute_lphoto``, mast_momen.py, colorizer_momen.py):
        ``rec`` (A's L_res on stride 4) at weight 1 plus ``code_inter_weight`` (0.5) × the
        L_res of the stride-8 head's affinity A′₈ (query through the head, reference through
        the key head without gradient, window radius ``code_head_radius`` scaled to the pair
        size, normalised with the bank negatives), reconstructing the labels resized
        bilinearly to stride 8 (colorizer_momen.py ``prep2``) against the query labels
        resized the same way. → (terms, total)."""
        cfg = self.config
        s_query = self.head(trunk_query)
        with torch.no_grad():
            s_ref = self.head_key(trunk_ref.detach())
        radius = cfg.radius_at(cfg.code_head_radius, y_ref.shape[-1])
        logits, valid = window_logits(s_query, s_ref, radius)
        valid = border_valid(valid, cfg.train_border)
        negs, neg_valid = self.bank.negatives(video_id)
        inter = inter_intra_affinity(logits, valid, negative_logits(s_query, negs), neg_valid)
        size = s_query.shape[-2:]
        labels = F.interpolate(y_ref, size=size, mode="bilinear", align_corners=False)
        goal = F.interpolate(y_query, size=size, mode="bilinear", align_corners=False)
        inter_rec = reconstruction_loss(reconstruct(inter, labels, radius), goal, cfg.rec_loss, cfg.loss_scale)
        self._pending = (s_ref.detach(), video_id.detach())
        terms = {"rec": rec, "rec_inter": inter_rec, "negatives": neg_valid.sum(dim=1).float().mean().detach()}
        return terms, rec + cfg.code_inter_weight * inter_rec

    @torch.no_grad()
    def update_key(self, momentum: float) -> None:
        """EMA of the online encoder's parameters into the key encoder (code design: of the
        stride-8 head into the key head): k ← m·k + (1 - m)·q ([U] models/mast_momen.py
        ``_momentum_update_key_encoder``). The first call (per checkpoint) copies the online
        module, parameters and buffers."""
        key, online = (self.head_key, self.head) if self.code_design else (self.key, self.online)
        if not bool(self.key_synced):
            key.load_state_dict(online.state_dict())
            self.key_synced.fill_(True)
            return
        ema_parameters_(key, online, momentum)

    @torch.no_grad()
    def push_references(self, x_ref: torch.Tensor, video_id: torch.Tensor) -> None:
        """Encode reference inputs (B, 3, S, S) with the key encoder and the shifted position
        map P̄ (one random shift per call, §3.2), sample ``bank_points`` points of each frame
        and enqueue them with their (B,) video ids."""
        shift = random_shift(*POSITION_SHAPE[1:]) if self.config.position_shift else None
        feats = self.key(x_ref, shift=shift)
        self.bank.push(sample_points(feats, self.config.bank_points), video_id)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Phase 2: EMA update of the key encoder, then push the step's reference frames
        into the memory bank (the order of [U] models/mast_momen.py). Phase 1: nothing."""
        if not self.config.phase(self.phase).inter or self._pending is None:
            return {}
        self.update_key(self.config.momentum)
        x_ref, video_id = self._pending
        self._pending = None
        if self.code_design:  # the key head's reference features, computed in the step (mast_momen.py)
            self.bank.push(sample_points(x_ref, self.config.bank_points), video_id)
        else:
            self.push_references(x_ref, video_id)
        return {"bank_frames": float(self.bank.filled.sum())}

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        """The rate of step ``step`` of the current phase: the phase's step factor at step ×
        batch samples seen in the phase (:meth:`PhaseConfig.lr_factor`, [U] main_dis.py
        ``adjust_lr``) times ``base_lr`` or, when the run holds both phases
        (``phase2_share``), times the phase's own rate (:attr:`PhaseConfig.lr`: 1e-3, then
        1e-4, [P] §3.3)."""
        phase = self.config.phase(self.phase)
        base = base_lr if self.phase2_share is None else phase.lr
        return base * phase.lr_factor(step * (phase.batch_size or self.batch_size))

    def make_optimizer(self, params: Params, fused: bool = False) -> torch.optim.Optimizer:
        """Adam over the online encoder with the config's betas ([U] main_dis.py
        ``betas=(0.9, 0.999)``) and ``train.weight_decay``; the rate is set per step by
        :meth:`lr_at`."""
        trainable = [q for q in self.parameters() if q.requires_grad]
        lr = self.config.phase(self.phase).lr
        return torch.optim.Adam(trainable, lr=lr, betas=self.config.adam_betas, weight_decay=params.train.weight_decay, fused=fused)

    def encoder(self) -> nn.Module:
        """The online :class:`LIIREncoder` (stride 4; ``post_conv`` 64-d or ``layer4`` 256-d)."""
        return self.online

    @classmethod
    def encoder_spec(cls) -> EncoderSpec:
        """Lab input, mean (50, 0, 0) std (50, 127, 127), stride 4, post-conv features by default."""
        return EncoderSpec(
            method=cls.name, normalization="lab", colour_space="lab", stride=STRIDE, layers=LAYERS, default_layer="post_conv"
        )

    @classmethod
    def load_encoder(cls, state: dict[str, torch.Tensor] | None, spec: EncoderSpec) -> nn.Module:
        """A frozen :class:`LIIREncoder` in eval mode from ``encoder.pt``'s state dict
        (``state=None``: random initialisation).
        Raises ValueError when the state dict does not fit."""
        if spec.method != cls.name:
            raise ValueError(f"encoder spec is for method {spec.method!r}, not {cls.name!r}")
        return frozen(LIIREncoder(), state, "the LIIR encoder")


METHOD = LIIR
