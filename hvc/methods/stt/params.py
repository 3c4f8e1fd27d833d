"""STT parameters: the ``stt`` section of params.yaml, the propagation preset, the display name.

Sources: [P] = Li & Liu, "Spatial-then-Temporal Self-Supervised Learning for Video
Correspondence" (CVPR 2023; arXiv 2209.07778), section or equation named; [C] = the
authors' code, github.com/qianduoduolr/Spa-then-Temp, file named; [DetCo] = Xie et al.,
"DetCo: Unsupervised Contrastive Learning for Object Detection" (ICCV 2021), whose
hyper-parameters step 1 adopts ([P] §4.1) and which are MoCo v2's (Chen et al. 2020,
"Improved Baselines with Momentum Contrastive Learning"). [C] holds no step-1 code (its
README points to the MoCo and DetCo repositories), so every step-1 number is [DetCo].
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hvc.config.section import Section as _Section

DISPLAY = "STT"
"""Display name of the method in tables."""

PRESET: dict[str, object] = {
    # [P] §4.1 "the evaluation is realized on the res4 layer" at stride 8; res4 is the
    # output of torchvision's ``layer3`` ([C] configs/test/res18_d8.py out_indices=(2,))
    "feature_layer": "layer3",
    "topk": 10,  # [C] configs/test/res18_d8.py test_cfg_davis topk=10
    "context": 20,  # [C] configs/test/res18_d8.py precede_frames=20 (plus the first frame, with_first=True)
    "temperature": 0.07,  # [C] configs/test/res18_d8.py temperature=0.07
    # [C] configs/test/res18_d8.py neighbor_range=24 with mode='square': a square of half-width
    # 24 // 2 = 12 feature cells (vcl/models/common/affinity_utils.py spatial_neighbor), applied
    # to the first frame too (with_first_neighbor=True); per benchmark: RADIUS_BY_BENCHMARK
    "radius": 12,
    "resolution": 480,  # [C] configs/test/base_data.py val_pipeline_davis Resize scale=(-1, 480)
}
"""STT's label-propagation preset (DAVIS; Lab input comes from the encoder spec)."""

RADIUS_BY_BENCHMARK: dict[str, int] = {
    # half of [C] configs/test/res18_d8.py neighbor_range (square windows, stride 8)
    "davis2016": 12,  # DAVIS 480p: neighbor_range 24
    "davis2017": 12,
    "davis2017_testdev": 12,
    "jhmdb": 5,  # 320 x 320 input: neighbor_range 10
    "vip": 16,  # 560 x 560 input: neighbor_range 32
}
"""STT's square-window half-width per benchmark, feature cells at stride 8."""


class STTParams(_Section):
    """Spatial-then-Temporal training ([P] §3-4.1; [C] configs/train/train.py and
    vcl/models/trackers/framework.py where the paper is silent; step 1: [DetCo]). Read only
    when ``method: stt``. One train stage runs both steps: the spatial phase (MoCo-style
    InfoNCE on images, [P] Eq. 1) for the first ``spatial_share`` of the budget, then the
    temporal phase on frame pairs with the step-1 encoder as the frozen teacher and the
    student's initialisation ([P] §3.1)."""

    # ---------------------------------------------------------------- schedule
    spatial_share: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of the training budget spent in the spatial phase: [P] §4.1 trains 200 ImageNet epochs of "
        "DetCo (batch 256: 1.0M steps) then 100k temporal steps, 1.0M / 1.1M = 0.91. Ignored (0) with teacher_checkpoint.",
    )
    teacher_checkpoint: str | None = Field(
        None,
        description="A step-1 ResNet-18 checkpoint (torchvision key names, optionally under 'state_dict' and a "
        "'module.'/'encoder_q.'/'backbone.' prefix, fc ignored) used as teacher and student initialisation instead of "
        "training the spatial phase ([C] configs/train/train.py backbone_t pretrained).",
    )
    # ---------------------------------------------------------------- spatial phase (step 1)
    spatial_batch_size: int | None = Field(None, ge=1, description="Images per step of the spatial phase ([DetCo]: 256). None: train.batch_size, so that an equal budget of samples holds (the paper's value: 256).")
    spatial_lr: float = Field(0.03, gt=0, description="SGD learning rate of the spatial phase, cosine to 0 ([DetCo]: 0.03).")
    spatial_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the spatial phase ([DetCo]: 0.9).")
    spatial_weight_decay: float = Field(1e-4, ge=0, description="SGD weight decay of the spatial phase ([DetCo]: 1e-4).")
    moco_dim: int = Field(128, ge=1, description="Embedding dimension d of the InfoNCE keys ([P] Eq. 1; [DetCo]: 128).")
    moco_hidden: int = Field(512, ge=1, description="Hidden width of the 2-layer MLP head ([DetCo]/MoCo v2: the trunk's width, 512 for R18).")
    moco_queue: int = Field(65536, ge=1, description="Negative keys K in the queue ([P] Eq. 1; [DetCo]: 65536).")
    moco_momentum: float = Field(0.999, ge=0, lt=1, description="EMA momentum of the key encoder ([DetCo]: 0.999).")
    moco_temperature: float = Field(0.2, gt=0, description="InfoNCE temperature tau_c ([P] Eq. 1; [DetCo]/MoCo v2: 0.2; MoCo v1: 0.07).")
    view_size: int | None = Field(None, ge=16, description="Side of each augmented view, pixels ([DetCo]/MoCo v2: 224). None: train.crop_size (the paper's value: 224).")
    view_scale: tuple[float, float] = Field((0.2, 1.0), description="RandomResizedCrop area range of the views ([DetCo]/MoCo v2: 0.2-1).")
    # ---------------------------------------------------------------- temporal phase (step 2)
    temporal_batch_size: int | None = Field(None, ge=1, description="Frame pairs per step ([P] §4.1: 128; [C] 4 GPUs x 16 = 64). None: train.batch_size, so that an equal budget of samples holds (the paper's value: 128).")
    temporal_lr: float = Field(1e-4, gt=0, description="Adam learning rate, half-period cosine ([P] §4.1: 1e-4; [C] 5e-5).")
    crop_size: int | None = Field(None, ge=32, description="Training frames' side, pixels ([P] §4.1: 256; [C] Resize 256 x 256). None: train.crop_size (the paper's value: 256).")
    crop_scale: tuple[float, float] = Field((0.6, 1.0), description="RandomResizedCrop area range ([C] configs/train/train.py: 0.6-1).")
    crop_ratio: tuple[float, float] = Field((1.5, 2.0), description="RandomResizedCrop aspect range ([C] configs/train/train.py: 1.5-2).")
    flip: bool = Field(True, description="Horizontal flip with probability 1/2 ([C] configs/train/train.py Flip 0.5).")
    frame_gap: int = Field(1, ge=1, description="Index step between reference and target frame ([C] vos_youtube_dataset.py step=1, clip_length=2).")
    radii: tuple[int, int] = Field((12, 6), description="Window radius of the res3 and res4 local correlations, cells ([C] train.py radius=[12, 6]).")
    rec_weights: tuple[float, float] = Field((1.0, 1.0), description="Weights of the res3 and res4 reconstructions ([P] Eq. 7: 1; [C] stage0/1_l1_loss=1).")
    rec_scale: float = Field(20.0, gt=0, description="Factor on both sides of the smooth-L1 reconstruction ([C] framework.py weight=20).")
    local_weight: float = Field(1000.0, ge=0, description="alpha, weight of L_lc ([P] §3.2; [C] train.py local_corrdis_loss=1000).")
    global_weight: float = Field(50.0, ge=0, description="beta, weight of L_gc ([P] Eq. 10; [C] train.py global_corrdis_loss=50).")
    teacher_temperature: float = Field(0.07, gt=0, description="tau of the teacher's global correlation ([P] Eq. 2; [C] framework.py temperature_t=0.07).")
    teacher_normalize: bool = Field(False, description="L2-normalise the teacher's res5 features first ([C] framework.py norm=False).")
    entropy_keep: float = Field(0.7, gt=0, le=1, description="T, share of high-entropy queries kept by L_lc^e ([P] Eq. 8-9; [C] framework.py T=0.7).")
    entropy_mask: Literal["official", "global"] = Field(
        "official",
        description="'official': [C] framework.py's threshold (entropies sorted along each row of the map, threshold = "
        "row int(w*T)-1 of the sorted map, compared column-wise); 'global': keep the int(h*w*T)-1 highest entropies of each map.",
    )
    entropy_source: Literal["official", "paper"] = Field(
        "official",
        description="Correlation whose entropy is taken: 'official': softmax of raw dot products over the zero-padded "
        "res4 window ([C] mmcv Correlation); 'paper': the res4 correlation c^{N-1} of the loss ([P] Eq. 8).",
    )
    pool_target: Literal["mean", "sum"] = Field(
        "mean",
        description="2x2 pooling of the res3 correlation into the L_lc target: 'mean' over query and reference cells "
        "(rows sum to 1/4, [C] framework.py avg_pool2d twice) or 'sum' over reference cells (rows sum to 1).",
    )

    @model_validator(mode="after")
    def _check(self) -> STTParams:
        for name in ("view_scale", "crop_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"stt.{name} = {getattr(self, name)!r}: need 0 < min <= max <= 1")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"stt.crop_ratio = {self.crop_ratio!r}: need 0 < min <= max")
        if min(self.radii) < 1:
            raise ValueError(f"stt.radii = {self.radii!r}: need radii >= 1")
        if self.crop_size is not None and self.crop_size % 32:
            raise ValueError(f"stt.crop_size = {self.crop_size}: must be a multiple of 32 (the res5 stride)")
        return self
