"""LIIR's parameter section (``liir:`` in params.yaml), with sources. The training loop's
keys (batch size, epochs, crop size: the side frames are resized to, ...) are in ``train:``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hvc.config.section import Section


class LIIRParams(Section):
    """LIIR training (Li et al., CVPR 2022, §3.3; github.com/shasha521/LIIR_pytorch where the
    paper is silent). One train stage runs both phases: phase 1 (intra-video reconstruction)
    for the first steps, then phase 2 (inter-video negatives + compactness) continuing from
    phase 1's weights with a fresh Adam state, as the authors' second run does. Each phase's
    pairs per step are ``batch_size1`` and ``batch_size2`` (default ``train.batch_size``, so an
    equal budget of samples holds; the paper: 32, then 12); frames are resized to
    ``train.crop_size`` (paper: 256)."""

    phase2_share: float = Field(
        5 / 35,
        ge=0,
        le=1,
        description="Share of the training steps spent in phase 2 (paper §3.3: 30 epochs phase 1 + 5 epochs phase 2 = 5/35).",
    )
    lr1: float = Field(1e-3, gt=0, description="Adam learning rate of phase 1 (paper §3.3: 1e-3).")
    lr2: float = Field(1e-4, gt=0, description="Adam learning rate of phase 2 (paper §3.3: 1e-4).")
    frame_gaps: list[int] = Field(
        default_factory=lambda: [2, 5, 8],
        min_length=1,
        description="Reference-to-query frame gaps of a training pair, in stored frames (LIIR_pytorch YouTubeVOSTrain.py: 2, 5, 8).",
    )
    frame_gap_probs: list[float] = Field(
        default_factory=lambda: [0.4, 0.4, 0.2],
        min_length=1,
        description="Probability of each of frame_gaps (LIIR_pytorch YouTubeVOSTrain.py: 0.4, 0.4, 0.2).",
    )
    bank_frames: int = Field(1440, ge=1, description="Frames of other videos in the memory bank (paper §3.3: 1,440).")
    batch_size1: int | None = Field(
        None, ge=1, description="Frame pairs per step in phase 1; None: train.batch_size (paper §3.3: 32)."
    )
    batch_size2: int | None = Field(
        None, ge=1, description="Frame pairs per step in phase 2; None: train.batch_size (paper §3.3: 12; LIIR_pytorch main_dis.py --bsize 12)."
    )
    phase2_design: Literal["paper", "code"] = Field(
        "paper",
        description="Phase 2 losses: 'paper' (paper Eq. 5: the inter-video reconstruction on the stride-4 features "
        "replaces the intra one, plus compactness Eq. 8); 'code' (LIIR_pytorch main_dis.py and models/mast_momen.py, "
        "the design of its published 72.2: intra reconstruction at weight 1, the inter-video one on a separate "
        "stride-8 head at weight 0.5, plus compactness).",
    )
    border: Literal["mask", "zero"] = Field(
        "mask",
        description="Training window cells outside the reference frame: 'mask' (left out of the softmax; the paper "
        "is silent) or 'zero' (dot product 0 and label 0, LIIR_pytorch's correlation sampler and F.unfold padding).",
    )
    scale_radius: bool = Field(
        True,
        description="Scale the training window radii with train.crop_size (6 cells at 256 px, paper §3.3 and LIIR_pytorch "
        "mast_momen.py R = 6), so smaller pairs use the window covering the same share of the frame; False: 6 cells.",
    )

    @model_validator(mode="after")
    def _check(self) -> LIIRParams:
        if len(self.frame_gaps) != len(self.frame_gap_probs) or abs(sum(self.frame_gap_probs) - 1.0) > 1e-6:
            raise ValueError(f"liir.frame_gap_probs must match liir.frame_gaps and sum to 1, got {self.frame_gaps}, {self.frame_gap_probs}")
        if min(self.frame_gaps) < 1:
            raise ValueError(f"liir.frame_gaps must be >= 1, got {self.frame_gaps}")
        return self
