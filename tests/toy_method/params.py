"""The toy's parameter section (``toy:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hvc.config.section import Section


class ToyParams(Section):
    """Toy method: a one-layer encoder that predicts a frame from a shifted copy (still
    phase) and frame t+1 from frame t (motion phase)."""

    width: int = Field(8, ge=1, le=64, description="Feature channels.")
    still_share: float = Field(0.5, ge=0, le=1, description="Share of the budget of the still-image phase.")
    motion_batch: int | None = Field(None, ge=1, description="Batch size of the motion phase (None: train.batch_size).")
    shift: int = Field(2, ge=1, le=8, description="Pixels the still phase shifts its input by.")
    lr_scale: float = Field(1.0, gt=0, description="Multiplies train.lr.")
    activation: Literal["relu", "tanh"] = Field("relu", description="Non-linearity.")
