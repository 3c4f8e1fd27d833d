"""The ``maskvos`` parameter section, the plain label-propagation preset and the settings of
the mask-embedded inference.

Sources: [P] Li et al., "Unified Mask Embedding and Correspondence Learning for
Self-Supervised Video Segmentation", CVPR 2023 (section, equation or table given per
field); [C] the authors' code, github.com/0liliulei/Mask-VOS (a fork of DUL, Araslanov et
al., NeurIPS 2021), file given per field. The paper decides; where it is silent the code
does, and an option gives the code's reading where the two differ.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hvc.config.section import Section as _Section

DISPLAY = "Mask-VOS"
"""Display name of the method in tables."""

PRESET: dict[str, object] = {
    # [C] configs/ytvos.yaml TEST: KNN 10, CXT_SIZE 20, RADIUS 12, TEMP 0.05 (labelprop/crw.py,
    # the CRW protocol); [P] §3.3 "Testing": first frame + prior 20 frames.
    "topk": 10,
    "context": 20,
    "radius": 12,
    "temperature": 0.05,
    # [P] §3.3: the visual embedding of E (128-d, L2-normalised key) is what is matched;
    # [C] core/config.py TEST.KEY "res4" is the other choice.
    "feature_layer": "key",
}
"""Plain label propagation with the key features of E (values for the propagation keys)."""


class MaskVOSInference(_Section):
    """Settings of the mask-embedded inference (:func:`hvc.methods.maskvos.inference.propagate_video_maskvos`).

    ``mode="paper"`` ([P] §3.3 "Testing", Tables 4b, 4e): references = the first frame and the
    previous ``context`` frames, a dense softmax over all of them, ``rounds`` decoding
    rounds. ``mode="official"`` ([C] infer_mask.py, models/modules.py MemoryBank_dotproduct):
    first frame + the last 5 frames, top-k 10, radius 12 on the non-first frames, one
    refinement round averaged with the plain readout of the masks; frames 960 pixels wide
    or wider are halved."""

    mode: Literal["paper", "official"] = Field("paper", description="paper or official (class docstring).")
    context: int = Field(20, ge=0, description="Previous frames used as references ([P] Table 4b: first + last 20; [C]: 5).")
    rounds: int = Field(3, ge=0, description="Decoding rounds ([P] Table 4e: 3; [C]: 1); 0 = the warped mask of Eq. 8.")
    temperature: float = Field(0.05, gt=0, description="Affinity temperature ([C] TEM 0.05; [P] silent).")
    topk: int | None = Field(None, ge=1, description="Keep the top-k affinities per query (None: dense, [P]; [C]: 10).")
    radius: int | None = Field(None, ge=1, description="Window radius on non-first references, feature cells (None: global, [P]; [C]: 12).")
    query_chunk: int = Field(2048, ge=1, description="Query cells per affinity chunk (memory only; the result does not depend on it).")

    @classmethod
    def official(cls) -> MaskVOSInference:
        """The official code's settings ([C] infer_mask.py, configs/ytvos.yaml TEST)."""
        return cls(mode="official", context=5, rounds=1, temperature=0.05, topk=10, radius=12)


class MaskVOSParams(_Section):
    """Mask-VOS training ([P] §3, §3.3; [C] where the paper is silent). One train stage runs
    both stages of the paper: the correspondence warm-up (L_Corr only) for the first
    ``corr_share`` of the budget, then the mask stage (clustering + L_Seg + L_Corr) with a
    fresh Adam. Each stage may have its own batch size (default ``train.batch_size``)."""

    # ---------------------------------------------------------------- schedule
    corr_share: float = Field(
        0.75, ge=0, le=1, description="Share of the budget of the correspondence warm-up ([P] §3.3: epochs 0-300 of 400 = 0.75)."
    )
    lr_corr: float = Field(1e-4, gt=0, description="Adam learning rate of the warm-up ([P] §3.3: base 1e-4; [C] configs/ytvos.yaml LR 0.0001).")
    lr_corr_gamma: float = Field(
        0.5, gt=0, le=1, description="Step decay factor of the warm-up rate ([P] §3.3: x0.5 every 100 epochs; [C] LR_GAMMA 0.5)."
    )
    lr_corr_steps: int = Field(
        3,
        ge=1,
        description="The warm-up is cut into this many equal parts, the rate decayed by lr_corr_gamma at each cut "
        "([P] §3.3: 300 epochs, decay every 100 = 3 parts).",
    )
    lr_mask: float = Field(1e-5, gt=0, description="Adam learning rate of the mask stage, constant ([P] §3.3: fixed 1e-5; [C] train_mask.py base LR x 0.1).")
    weight_decay: float = Field(5e-4, ge=0, description="Adam weight decay ([C] configs/ytvos.yaml WEIGHT_DECAY 0.0005; [P] silent).")
    batch_corr: int | None = Field(
        None, ge=1, description="Clips per step in the warm-up; None: train.batch_size, so an equal budget of samples holds ([P] §3.3 and [C] configs/ytvos.yaml: 16)."
    )
    batch_mask: int | None = Field(
        None, ge=1, description="Clips per step in the mask stage; None: train.batch_size ([P] §3.3: 16; [C] configs/ytvos_mask.yaml: 12)."
    )
    # ---------------------------------------------------------------- clips
    clip_length_corr: int = Field(
        5, ge=2, description="Frames per warm-up clip ([C] configs/ytvos.yaml VIDEO_LEN 5); frames 0, 1 feed L_Short, 0 and T-1 L_Long."
    )
    clip_length_mask: int = Field(3, ge=2, description="Frames per mask-stage clip: N = T - 1 references + 1 query ([P] §3.3: 3 frames, N = 2).")
    frame_gap: int = Field(2, ge=1, description="Stored frames between consecutive warm-up clip frames ([C] configs/ytvos.yaml FRAME_GAP 2).")
    frame_gap_mask: int = Field(
        3,
        ge=1,
        description="Stored frames between consecutive mask-stage clip frames ([P] silent): 3 puts frames 0 and 2 six "
        "frames apart, so the L_Long pair keeps |t - t'| >= 5 in the joint stage.",
    )
    size: int | None = Field(None, ge=32, description="Side of the square training crop, pixels; None: train.crop_size ([P] §3.3: 256 x 256).")
    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="Area fraction of the clip's random crop ([P] §3.3 random scaling and cropping; [C] RND_ZOOM_RANGE [0.5, 1])."
    )
    flip: bool = Field(True, description="Random horizontal flip of the clip ([P] §3.3; [C] GUIDED_HFLIP).")
    # ---------------------------------------------------------------- correspondence loss
    corr_loss: Literal["paper", "official"] = Field(
        "paper",
        description="paper: lambda_1 L_Short (Eq. 12) + lambda_2 L_Long (Eqs. 14-15); official: the code's DUL losses "
        "([C] models/framework.py): dul_cross_weight x cross-view InfoNCE at a 4x4 grid + dul_temp_weight x the "
        "8x8-anchor temporal classification.",
    )
    dul_grid: int = Field(8, ge=1, description="Anchors per side of the official temporal term ([C] core/config.py MODEL.GRID_SIZE 8).")
    dul_grid_ref: int = Field(4, ge=1, description="Points per side of the official cross-view term ([C] MODEL.GRID_SIZE_REF 4).")
    dul_cross_weight: float = Field(0.1, ge=0, description="Weight of the official cross-view term ([C] MODEL.CE_REF 0.1).")
    dul_temp_weight: float = Field(1.0, ge=0, description="Weight of the official temporal term ([C] models/framework.py: 1).")
    lambda_short: float = Field(0.1, ge=0, description="Weight of L_Short ([P] Eq. 16: lambda_1 = 0.1).")
    lambda_long: float = Field(0.5, ge=0, description="Weight of L_Long ([P] Eq. 16: lambda_2 = 0.5).")
    temperature: float = Field(
        0.05,
        gt=0,
        description="Temperature of every cosine affinity (Eqs. 6, 12, 14, 15). [P] prints none (exp of the cosine); "
        "[C] core/config.py TEST.TEMP 0.05 and models/framework_mask.py TEM=0.05. 1.0 = the paper's letter.",
    )
    equivariance_scale: tuple[float, float] = Field(
        (0.7, 1.0),
        description="Side fraction of the random crop of the transformation Phi (Eqs. 11, 13; [P] §3.2: scaling, flipping, "
        "cropping, range not given).",
    )
    long_min_gap: int = Field(5, ge=1, description="Smallest frame distance of the L_Long pair, stored frames ([P] §3.2: |t - t'| >= 5).")
    # ---------------------------------------------------------------- clustering
    clusters: int = Field(5, ge=2, description="k-means clusters M per video ([P] Table 4c: M = 5; [C] gen_mask.py: 7).")
    kmeans_iters: int = Field(100, ge=1, description="EM steps of k-means ([P] §3.1: 100).")
    large_cluster: float = Field(
        0.4, gt=0, le=1, description="Clusters holding more than this share of the pixels become background ([P] §3.3: 40 %)."
    )
    recluster_epochs: int = Field(10, ge=1, description="Re-cluster a video every this many epochs ([P] §3.3 and Table 4d: 10).")
    mask_epochs: int = Field(
        100, ge=1, description="Epochs of the mask stage, to turn recluster_epochs into a share of it ([P] §3.3: epochs 300-400)."
    )
    recluster_steps: int | None = Field(
        None, ge=1, description="Re-cluster after this many steps instead (None: recluster_epochs / mask_epochs of the mask stage)."
    )
    position_code: bool = Field(True, description="Append a 3-D sinusoidal position code to the clustered features ([P] §3.1; [C] gen_mask.py: none).")
    position_frequencies: int = Field(4, ge=1, description="Sine/cosine frequencies per axis (t, y, x) of the position code ([P] silent).")
    position_weight: float = Field(
        0.5, ge=0, description="Norm of the position code relative to the unit-norm features ([P] silent)."
    )
    cluster_features: Literal["key", "res4"] = Field(
        "key", description="Features clustered: key = E's 128-d embedding ([P] §3.1); res4 = [C] gen_mask.py TEST.KEY res4."
    )
    cluster_cache: int = Field(4096, ge=1, description="Videos whose centroids are kept (YouTube-VOS train: 3,471 videos).")
    # ---------------------------------------------------------------- mask stage
    value_head: Literal["paper", "official"] = Field(
        "paper",
        description="paper: V = ResNet-18 on frame + mask, two 1x1 convs to 512 ([P] §3.3); official: trunk to layer3 "
        "fused with E's res4 by two residual blocks and CBAM ([C] models/net2.py).",
    )
    freeze_encoder_mask: bool = Field(
        False, description="Mask stage: E's trunk frozen and L_Corr dropped ([C] models/net.py no_grad, framework_mask.py); [P]: trains E jointly."
    )

    inference: MaskVOSInference = Field(
        default_factory=MaskVOSInference,
        description="The mask-embedded inference (MaskVOSInference: the paper's settings; mode official for the code's).",
    )

    @model_validator(mode="after")
    def _check(self) -> MaskVOSParams:
        for name in ("crop_scale", "equivariance_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"maskvos.{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        for stage, (length, gap) in {"warm-up": (self.clip_length_corr, self.frame_gap), "mask": (self.clip_length_mask, self.frame_gap_mask)}.items():
            if (length - 1) * gap < self.long_min_gap:
                raise ValueError(
                    f"maskvos: the {stage} clip spans {(length - 1) * gap} frames, fewer than long_min_gap = {self.long_min_gap} (L_Long pair)"
                )
        if self.size is not None and self.corr_loss == "official" and any((self.size // 8) % n for n in (self.dul_grid, self.dul_grid_ref)):
            raise ValueError(f"maskvos: the feature map side {self.size // 8} is not a multiple of dul_grid and dul_grid_ref")
        if self.size is not None and self.size % 8:
            raise ValueError(f"maskvos.size must be a multiple of the stride 8, got {self.size}")
        return self


INFERENCE = MaskVOSInference().model_dump()
"""The paper's mask-embedded inference settings as a dict (for the lead's registry)."""
