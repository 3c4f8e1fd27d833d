"""HVC behind the harness's method interface (:class:`hvc.methods.base.Method`).

:class:`HVCMethod` *is* the :class:`~hvc.methods.hvc.model.HVC` module (same parameters,
same state-dict keys, so earlier checkpoints load), plus what the training loop asks of a
method: two-view samples (:class:`~hvc.methods.hvc.views.TwoViews`), the symmetric hybrid
loss of Algorithm 1, the EMA update of the target encoder after each step (Eq. 1, cosine
momentum schedule), and the online backbone as the propagation encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from hvc.methods.base import DataSpec, EncoderSpec, Method
from hvc.methods.hvc.model import HVC, build_encoder_for_propagation, momentum_at
from hvc.methods.hvc.views import TwoViews

if TYPE_CHECKING:
    from hvc.config.params import Params


class ViewsDict:
    """Picklable per-sample transform: image (3, H, W) uint8 → {"view1", "view2": (3, S, S),
    "box1", "box2": (4,)} (:class:`TwoViews`, same random draws)."""

    def __init__(self, views: TwoViews) -> None:
        self.views = views

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        v1, v2, b1, b2 = self.views(image)
        return {"view1": v1, "view2": v2, "box1": b1, "box2": b2}


class HVCMethod(HVC, Method):
    """HVC (paper §3, Algorithm 1) as a trainable method of the harness.

    Batch: ``{"view1", "view2"}`` (B, 3, S, S) normalised views and ``{"box1", "box2"}``
    (B, 4) crop boxes. Loss dict: ``loss``, ``static``, ``dynamic`` (Eq. 10). The base EMA
    momentum (``hvc.momentum``) follows the cosine schedule of :func:`momentum_at`.
    """

    name = "hvc"
    batch_kind = "views"

    def __init__(self, *args, base_momentum: float = 0.99, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.base_momentum = base_momentum

    @classmethod
    def build(cls, params: Params) -> HVCMethod:
        """The HVC model of the ``hvc`` section (Tables 6, 7c, 7d, 7f)."""
        h = params.hvc
        return cls(
            proj_dim=h.proj_dim,
            head=h.head,
            radius=h.radius,
            radius_unit=h.radius_unit,
            alpha=h.alpha,
            static=h.static,
            dynamic=h.dynamic,
            base_momentum=h.momentum,
        )

    def data_spec(self, params: Params, phase: int = 0) -> DataSpec:
        """Two RandomResizedCrop views of one image (§3.2.2, Table 7b) with their boxes,
        ``train.crop_size`` pixels square."""
        h = params.hvc
        return DataSpec("views", ViewsDict(TwoViews(params.train.crop_size, h.scale, h.ratio, h.augment, h.normalization)))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Symmetric hybrid loss (Eq. 10) of one batch of two views."""
        return HVC.forward(self, batch["view1"], batch["view2"], batch["box1"], batch["box2"])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """= :meth:`loss` (the interface's call; :meth:`HVC.forward` takes the four tensors)."""
        return self.loss(batch)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """EMA update of the target encoder with the momentum of step ``step`` (Eq. 1)."""
        m = momentum_at(step, total_steps, self.base_momentum)
        self.update_target(m)
        return {"momentum": m}

    def encoder(self) -> nn.Module:
        """The online ResNet-18 backbone (stride 8; layer3/layer4), as the paper propagates with."""
        return self.online.backbone

    @classmethod
    def encoder_spec(cls) -> EncoderSpec:
        """RGB input with ImageNet mean/std at inference, as the authors' infer_vos.py
        (whatever ``hvc.normalization`` was used in training); stride 8."""
        return EncoderSpec(method=cls.name, normalization="imagenet", colour_space="rgb", stride=8)

    @classmethod
    def load_encoder(cls, state: dict[str, torch.Tensor] | None, spec: EncoderSpec) -> nn.Module:
        """:func:`build_encoder_for_propagation` (raises ValueError for another architecture)."""
        return build_encoder_for_propagation(state)

METHOD = HVCMethod
