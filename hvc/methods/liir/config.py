"""LIIR hyper-parameters: the two training phases and the inference settings, with sources.

[P] = Li et al., "Locality-Aware Inter-and Intra-Video Reconstruction for Self-Supervised
Correspondence Learning", CVPR 2022; [U] = github.com/shasha521/LIIR_pytorch (the code the
authors' repository github.com/0liliulei/LIIR points to), file named in each entry.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

PHASES = (1, 2)


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase.

    Attributes:
        epochs: passes over the training pairs.
        lr: Adam learning rate at the start of the phase.
        batch_size: frame pairs per step.
        inter: use the inter-video negatives (A′, Eq. 4) for the reconstruction.
        compact: add the compactness loss (Eq. 8).
        lr_milestones: samples seen (steps × batch) after which the next factor applies.
        lr_factors: multipliers of ``lr`` after each milestone (same length).
    """

    epochs: int
    lr: float
    batch_size: int
    inter: bool
    compact: bool
    lr_milestones: tuple[int, ...]
    lr_factors: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.lr_milestones) != len(self.lr_factors):
            raise ValueError(f"lr_milestones and lr_factors differ in length: {self.lr_milestones} vs {self.lr_factors}")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must increase, got {self.lr_milestones}")

    def lr_factor(self, samples_seen: int) -> float:
        """Multiplier of ``lr`` once ``samples_seen`` training pairs were used: 1 up to and
        including the first milestone, then the factor of the last milestone passed ([U]
        main_dis.py ``adjust_lr``: ``if iteration <= milestone``, iteration counted in
        samples)."""
        i = bisect.bisect_left(self.lr_milestones, samples_seen)
        return 1.0 if i == 0 else self.lr_factors[i - 1]


PHASE1 = PhaseConfig(
    epochs=30,  # [P] §3.3 "At the initial 30 epochs, only intra-video reconstruction"; [U] main_dis.py --epochs 30
    lr=1e-3,  # [P] §3.3 "learning rate of 10^-3"; [U] README step 1 --lr 1e-3
    batch_size=32,  # [P] §3.3 "batch size of 32" ([U] main_dis.py --bsize default 12)
    inter=False,  # [P] §3.3 intra-video only for warm-up
    compact=False,  # [P] §3.3 compactness comes with the inter-video phase
    lr_milestones=(400_000, 600_000, 800_000, 1_000_000),  # [U] main_dis.py adjust_lr (not momentum)
    lr_factors=(0.5, 0.25, 0.125, 0.0625),  # [U] main_dis.py adjust_lr
)
"""Phase 1: intra-video reconstruction warm-up."""

PHASE2 = PhaseConfig(
    epochs=5,  # [P] §3.3 "at the next 5 epochs"; [U] README step 2 --epochs 5
    lr=1e-4,  # [P] §3.3 "learning rate of 10^-4"; [U] README step 2 --lr 1e-4
    batch_size=12,  # [P] §3.3 "batch size of 12"; [U] main_dis.py --bsize 12
    inter=True,  # [P] §3.3 inter-video reconstruction learning
    compact=True,  # [P] §3.3 "with spatial compactness based regularization"
    lr_milestones=(55_000, 85_000, 135_000, 175_000, 250_000, 300_000),  # [U] main_dis.py adjust_lr (usemomen)
    lr_factors=(0.9, 0.75, 0.5, 0.25, 0.125, 0.0625),  # [U] main_dis.py adjust_lr (usemomen)
)
"""Phase 2: inter-and intra-video reconstruction + compactness, from the phase-1 weights."""


@dataclass(frozen=True)
class LIIRConfig:
    """Every number of LIIR training and inference.

    Attributes (source in brackets):
        image_size: training frames resized to this square side, pixels ([P] §3.3 "resized
            into 256×256"; [U] YTVOSTrainLoader.py ``cv2.resize(image, (256, 256))``).
        frame_gaps: reference-to-query frame gaps of a training pair ([U]
            YouTubeVOSTrain.py ``np.random.choice([2, 5, 8], p=[0.4, 0.4, 0.2])``).
        frame_gap_probs: probabilities of ``frame_gaps`` ([U] same line).
        pairs_per_epoch: training pairs per epoch ([U] YouTubeVOSTrain.py ``refs_train[:69600]``).
        label_stride: labels sampled every this many pixels onto the feature grid ([U]
            mast_momen.py ``self.D = 4``; equals the encoder stride, [P] §3.3).
        train_radius: window radius R at training, feature cells, for pairs of
            ``train_radius_size`` pixels: 13 × 13 window ([U] mast_momen.py ``self.R = 6``
            when training, on 256 × 256 pairs).
        train_radius_size: side, pixels, at which ``train_radius`` holds (256, [P] §3.3);
            pairs of another ``image_size`` use the window covering the same share of the
            frame (:meth:`radius_at`); None keeps ``train_radius`` cells at every size.
        test_radius: window radius at inference, feature cells: 29 × 29 ([U] mast_momen.py
            ``self.R = 14``), for frames whose short side is ``test_radius_size``.
        test_radius_size: short side, pixels, at which ``test_radius`` holds (480: [U]
            evaluate_davis.py runs DAVIS at 480p; 14 cells × 4 = 56 pixels).
        train_border: window cells outside the reference frame at training: "mask" (left
            out of the softmax; the paper is silent) or "zero" ([U]: the correlation
            sampler's zero padding, dot product 0 and label 0).
        phase2_design: "paper" ([P] Eq. 5: A′ on the stride-4 features replaces A, weights
            ``inter_weight`` and ``intra_weight_phase2``) or "code" ([U] main_dis.py and
            mast_momen.py: the intra term on the stride-4 features at weight 1, the inter
            term on a separate stride-8 head at weight ``code_inter_weight``).
        code_inter_weight: weight of the stride-8 inter term of the "code" design ([U]
            main_dis.py ``loss += 0.5 * ...``).
        code_head_radius: window radius, stride-8 cells, of the "code" design's inter term
            at ``train_radius_size`` ([U] colorizer_momen.py ``patch_size = R + 1`` = 7:
            radius 3).
        rec_loss: "smooth_l1" ([U] main_dis.py ``F.smooth_l1_loss(outputs*20, tar_y*20)``)
            or "l2" ([P] Eq. 3 ‖·‖₂); the same form is used for L_com (Eq. 8).
        loss_scale: factor on both sides of the smooth-L1 losses ([U] main_dis.py, 20).
        bank_frames: frames in the memory bank ([P] §3.3 "1,440 frames"; [U] default
            bsize × factor = 12 × 80 = 960).
        bank_points: feature points sampled per stored frame ([P] §3.3 and App. C: 4).
        momentum: EMA momentum of the key encoder that fills the bank ([P] §3.3 "moving
            average strategy"; [U] main_dis.py ``--enc_mo 0.999``).
        position_shift: encode bank frames with the rolled, detached position map P̄ ([P]
            §3.2, Table 5c; [U] leaves it as a TODO).
        inter_weight: weight of the A′ reconstruction in phase 2 ([P] Eq. 5 replaces Eq. 2:
            1; [U] main_dis.py uses 0.5 on its stride-8 head).
        intra_weight_phase2: weight of the plain A reconstruction kept in phase 2 ([P]: 0,
            A′ replaces A; [U] main_dis.py keeps it at 1).
        compact_weight: weight of L_com ([U] main_dis.py ``loss += compact_loss``: 1).
        compact_peaks: M Gaussians of the compactness prior ([P] §3.2 and App. A: M = 2).
        compact_fwhm: full width at half maximum of each Gaussian, feature cells ([U]
            colorizer_momen.py ``make_gaussian(sigma=1)``, documented as FWHM).
        compact_gate: training: only rows whose top affinity exceeds this count ([U]
            colorizer_momen.py ``value_axis_ > 0.5``).
        compact_test_threshold: inference: rows whose top affinity exceeds this use Ã ([U]
            colorizer_momen.py ``value_axis_ > 0.1``).
        test_foreground_gain: inference: foreground label channels × this before the
            weighted sum ([U] colorizer_momen.py ``image_uf[:, 1:] *= 1.05``).
        test_references: reference frames at inference, "0", "5" absolute, negatives
            relative to the current frame t ([P] §3.3 "I_0, I_5, I_t-5, I_t-3, I_t-1"; [U]
            evaluate_davis.py ``ref == 0``).
        adam_betas: Adam (β1, β2) ([P] §3.3 Adam; [U] main_dis.py ``betas=(0.9, 0.999)``).
        phase1, phase2: :class:`PhaseConfig` of each phase.
    """

    image_size: int = 256
    frame_gaps: tuple[int, ...] = (2, 5, 8)
    frame_gap_probs: tuple[float, ...] = (0.4, 0.4, 0.2)
    pairs_per_epoch: int = 69_600
    label_stride: int = 4
    train_radius: int = 6
    train_radius_size: int | None = 256
    test_radius: int = 14
    test_radius_size: int | None = 480
    train_border: str = "mask"
    phase2_design: str = "paper"
    code_inter_weight: float = 0.5
    code_head_radius: int = 3
    rec_loss: str = "smooth_l1"
    loss_scale: float = 20.0
    bank_frames: int = 1440
    bank_points: int = 4
    momentum: float = 0.999
    position_shift: bool = True
    inter_weight: float = 1.0
    intra_weight_phase2: float = 0.0
    compact_weight: float = 1.0
    compact_peaks: int = 2
    compact_fwhm: float = 1.0
    compact_gate: float = 0.5
    compact_test_threshold: float = 0.1
    test_foreground_gain: float = 1.05
    test_references: tuple[int, ...] = (0, 5, -5, -3, -1)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    phase1: PhaseConfig = PHASE1
    phase2: PhaseConfig = PHASE2

    def __post_init__(self) -> None:
        if len(self.frame_gaps) != len(self.frame_gap_probs) or abs(sum(self.frame_gap_probs) - 1.0) > 1e-6:
            raise ValueError(f"frame_gap_probs must match frame_gaps and sum to 1, got {self.frame_gaps}, {self.frame_gap_probs}")
        if min(self.frame_gaps) < 1:
            raise ValueError(f"frame gaps must be >= 1, got {self.frame_gaps}")
        if self.image_size % self.label_stride:
            raise ValueError(f"image_size {self.image_size} is not a multiple of label_stride {self.label_stride}")
        if self.rec_loss not in ("smooth_l1", "l2"):
            raise ValueError(f"rec_loss must be 'smooth_l1' or 'l2', got {self.rec_loss!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.train_border not in ("mask", "zero") or self.phase2_design not in ("paper", "code"):
            raise ValueError(f"train_border must be 'mask' or 'zero' and phase2_design 'paper' or 'code', got {self.train_border!r}, {self.phase2_design!r}")

    def radius_at(self, radius: int, size: int) -> int:
        """``radius`` (cells at ``train_radius_size`` pixels) for training pairs of ``size``
        pixels: ``max(1, round(radius · size / train_radius_size))`` (6 at 256, 3 at 128);
        ``radius`` itself when ``train_radius_size`` is None."""
        if self.train_radius_size is None:
            return radius
        return max(1, round(radius * size / self.train_radius_size))

    def phase(self, number: int) -> PhaseConfig:
        """:attr:`phase1` or :attr:`phase2`. Raises ValueError for another number."""
        if number not in PHASES:
            raise ValueError(f"LIIR phase must be 1 or 2, got {number!r}")
        return self.phase1 if number == 1 else self.phase2
