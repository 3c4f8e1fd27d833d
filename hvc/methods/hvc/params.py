"""HVC's parameter section (``hvc:`` in params.yaml): the knobs of the method itself (paper
§3, Tables 6-7; the authors' train_img.py where the paper is silent). The training loop's
keys (batch size, epochs, learning rate, crop size, ...) are in ``train:``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hvc.config.section import Section


class HVCParams(Section):
    """HVC (paper §3.3, Tables 6-7; github.com/NUST-Machine-Intelligence-Laboratory/HVC train_img.py where the paper is silent)."""

    # loss (Eqs. 6-10, Table 6, 7c, 7d)
    static: bool = Field(True, description="Use the static term L_static (Table 6).")
    dynamic: bool = Field(True, description="Use the pseudo-dynamic term L_dynamic (Table 6).")
    alpha: float = Field(1.0, ge=0, description="Weight of L_dynamic in L_hybrid (Table 7c: 0.1/0.5/1/2).")
    radius: float = Field(0.1, gt=0, description="Positive radius r of Eq. 8 (Table 7d: 0.01/0.1/0.3/0.7).")
    radius_unit: Literal["image", "cell"] = Field(
        "cell",
        description="'cell': D in feature-cell diagonals, A = D < r (the authors' code; matches the "
        "positive counts of the paper's Fig. 8); 'image': D in normalised image units, A = D <= r.",
    )
    # model (§3.1, Table 7f)
    proj_dim: int = Field(256, ge=1, description="Hidden and output channels of projector/predictor (Table 7f: 128/256/512/1024).")
    head: Literal["paper", "official"] = Field(
        "paper",
        description="'paper': conv-BN-ReLU x2 + conv (paper §3.1); 'official': the authors' ProjBlock, "
        "LeakyReLU(0.01), BN over a residual middle conv, biased convs.",
    )
    momentum: float = Field(0.99, ge=0, le=1, description="Initial EMA momentum m_0 of the target encoder; cosine schedule to 1 (Eq. 1).")
    # views (§3.2.2, Table 7b); the view side is train.crop_size
    scale: tuple[float, float] = Field((0.0, 1.0), description="RandomResizedCrop area range (official code: 0..1).")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="RandomResizedCrop aspect-ratio range.")
    augment: Literal["crop", "affine", "color", "blur"] = Field(
        "crop",
        description="Table 7b, cumulative: crop; crop+affine/perspective; +colour jitter; +Gaussian blur.",
    )
    normalization: Literal["imagenet", "cifar"] = Field(
        "imagenet",
        description="Mean/std of the training input normalisation: imagenet, or cifar "
        "(the authors' train_img.py: mean 0.4914/0.4822/0.4465, std 0.2023/0.1994/0.2010).",
    )

    @model_validator(mode="after")
    def _check(self) -> HVCParams:
        if not (self.static or self.dynamic):
            raise ValueError(
                "hvc.static and hvc.dynamic are both false: nothing to train "
                "(the 'neither' row of Table 6 is the semantic baseline alone; set propagation.semantic_checkpoint)"
            )
        lo, hi = self.scale
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"hvc.scale = {self.scale!r}: need 0 <= min <= max <= 1")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"hvc.ratio = {self.ratio!r}: need 0 < min <= max")
        return self
