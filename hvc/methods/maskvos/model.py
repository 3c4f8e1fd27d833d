"""Mask-VOS networks: visual encoder E, frame-mask (value) encoder V, mask decoder D.

[P] Li et al., CVPR 2023, §3 (Eq. 3: Y_q = D(E(I_q), {V([I_rn, Y_rn])}_n)) and §3.3
"Network Configuration"; [C] github.com/0liliulei/Mask-VOS models/net.py, models/net2.py,
models/modules.py (Decoder, ResBlock, UpsampleBlock), models/framework_mask.py (soft
aggregation).

Shapes for a (B, 3, H, W) ImageNet-normalised RGB input (H, W multiples of 8):

    E:  stem (conv 7x7 s2 + max-pool) → layer1 (64, H/4) → layer2 (128, H/8)
        → layer3 (256, H/8) → layer4 = res4 (512, H/8) → key head → (128, H/8), L2-normalised
    V:  [frame, mask] (4, H, W) → ResNet-18 of the same shape → (512, H/8) → two 1x1 convs
        → (512, H/8) ("paper"); or trunk to layer3 (256, H/8) fused with E's res4 by two
        residual blocks and CBAM → (512, H/8) ("official", [C] models/net2.py)
    D:  [readout V_q, V̄_q] (1024, H/8) → ResBlock → 512 → + skip layer2 (H/8) → 256
        → x2 + skip layer1 (H/4) → 128 → 3x3 conv → 1 logit per object → x4 → (1, H, W)

The decoder's module names follow [C] models/modules.py ``Decoder`` (compress, up_16_8,
up_8_4, pred), so a state dict of theirs loads when the skip widths are theirs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hvc.methods.hvc.model import Backbone

STRIDE = 8
"""Output stride of E and V ([P] §3.3: strides of the last two blocks removed → 8)."""
KEY_DIM = 128
"""D, channels of E's embedding ([P] §3.3: D = 128)."""
VALUE_DIM = 512
"""D', channels of V's embedding ([P] §3.3: D' = 512)."""
RES4_DIM = 512
SKIP8_DIM = 128
SKIP4_DIM = 64
LAYERS = ("key", "res4")
"""Feature maps :meth:`MaskVOSEncoder.forward` returns by name."""


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    """1x1 conv → BN → ReLU → 1x1 conv ([C] models/net.py ``MLP``; [P] §3.3 "two 1x1
    convolution layers")."""
    return nn.Sequential(nn.Conv2d(n_in, n_in, 1), nn.BatchNorm2d(n_in), nn.ReLU(inplace=True), nn.Conv2d(n_in, n_out, 1))


class MaskVOSEncoder(nn.Module):
    """Visual encoder E: ResNet-18 at stride 8 (torchvision layout with max-pool, layer3
    and layer4 strides 1: [C] models/resnet18.py ``modify``; the trunk of
    :class:`hvc.methods.hvc.model.Backbone`) and the key head to D = 128.

    ``forward(x, layer="key")``: (B, 3, H, W) → (B, 128, H/8, W/8) L2-normalised key, or
    (B, 512, H/8, W/8) res4 for ``layer="res4"``. Raises ValueError for another layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Backbone()
        self.key_head = _mlp(RES4_DIM, KEY_DIM)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) → {"key": (B, 128, h, w) L2-normalised, "res4": (B, 512, h, w),
        "skip8": layer2 (B, 128, h, w), "skip4": layer1 (B, 64, 2h, 2w)}, h = H/8."""
        t = self.trunk
        skip4 = t.layer1(t.stem(x))
        skip8 = t.layer2(skip4)
        res4 = t.layer4(t.layer3(skip8))
        key = F.normalize(self.key_head(res4), dim=1)
        return {"key": key, "res4": res4, "skip8": skip8, "skip4": skip4}

    def forward(self, x: torch.Tensor, layer: str = "key") -> torch.Tensor:
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        if layer == "res4":
            t = self.trunk
            return t.layer4(t.layer3(t.layer2(t.layer1(t.stem(x)))))
        return self.features(x)["key"]


class ResBlock(nn.Module):
    """Pre-activation residual block of two 3x3 convs; a 3x3 conv on the shortcut when the
    width changes ([C] models/modules.py ``ResBlock``, from STCN). (B, i, h, w) → (B, o, h, w)."""

    def __init__(self, indim: int, outdim: int | None = None) -> None:
        super().__init__()
        outdim = outdim or indim
        self.downsample = None if indim == outdim else nn.Conv2d(indim, outdim, 3, padding=1)
        self.conv1 = nn.Conv2d(indim, outdim, 3, padding=1)
        self.conv2 = nn.Conv2d(outdim, outdim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        return (x if self.downsample is None else self.downsample(x)) + r


class UpsampleBlock(nn.Module):
    """Skip connection: 3x3 conv of the encoder's skip features plus the (``scale``-times
    bilinearly upsampled) decoder features, then a :class:`ResBlock` ([C] models/modules.py
    ``UpsampleBlock`` (scale 1) and ``UpsampleBlock2`` (scale 2))."""

    def __init__(self, skip_c: int, up_c: int, out_c: int, scale: int = 1) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_c, up_c, 3, padding=1)
        self.out_conv = ResBlock(up_c, out_c)
        self.scale = scale

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            up = F.interpolate(up, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.out_conv(self.skip_conv(skip) + up)


class ChannelGate(nn.Module):
    """CBAM channel attention: x · sigmoid(MLP(avgpool x) + MLP(maxpool x)) (Woo et al., ECCV 2018;
    [C] models/cbam.py, reduction 16)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(), nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: x · sigmoid(conv7x7([max over C, mean over C]))."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class ValueEncoder(nn.Module):
    """Frame-mask encoder V (Eq. 5): V([I, Y]) ∈ R^{HW × D'}.

    ``forward(frames, masks, res4=None)``: frames (B, 3, H, W) normalised, masks (B, 1, H, W)
    in [0, 1] (one object each) → (B, 512, H/8, W/8). ``head="paper"``: a ResNet-18 like E
    with a 4-channel stem and two 1x1 convs to D' = 512 ([P] §3.3); ``head="official"``:
    the trunk to layer3 (256) fused with E's res4 (needs ``res4`` (B, 512, H/8, W/8)) by
    ResBlock → CBAM → ResBlock ([C] models/net2.py, models/resnet18_mod.py).
    Raises ValueError: unknown head, or ``res4`` missing for the official head.
    """

    def __init__(self, head: str = "paper") -> None:
        super().__init__()
        if head not in ("paper", "official"):
            raise ValueError(f"value head must be 'paper' or 'official', got {head!r}")
        self.head_kind = head
        self.trunk = Backbone()
        self.trunk.stem[0] = nn.Conv2d(4, 64, kernel_size=7, stride=2, padding=3, bias=False)
        _init_convs(self.trunk.stem)
        if head == "paper":
            self.head = _mlp(RES4_DIM, VALUE_DIM)
        else:
            self.trunk.layer4 = nn.Identity()
            self.block1 = ResBlock(256 + RES4_DIM, VALUE_DIM)
            self.attention = nn.Sequential(ChannelGate(VALUE_DIM), SpatialGate())
            self.block2 = ResBlock(VALUE_DIM, VALUE_DIM)

    def forward(self, frames: torch.Tensor, masks: torch.Tensor, res4: torch.Tensor | None = None) -> torch.Tensor:
        t = self.trunk
        x = t.layer4(t.layer3(t.layer2(t.layer1(t.stem(torch.cat([frames, masks], dim=1))))))
        if self.head_kind == "paper":
            return self.head(x)
        if res4 is None:
            raise ValueError("the official value head fuses E's res4 features: pass res4")
        x = self.block1(torch.cat([x, res4], dim=1))
        return self.block2(x + self.attention(x))


class Decoder(nn.Module):
    """Mask decoder D (Eq. 9: Ŷ_q = D([V_q, V̄_q])), one object at a time.

    ``forward(x, skip8, skip4)``: x = [V_q, V̄_q] (B, 2·D', h, w), E's layer2 (B, skip8, h, w)
    and layer1 (B, skip4, 2h, 2w) of the query → (B, 1, 8h, 8w) logit of the object
    ([C] models/modules.py ``Decoder``: compress ResBlock 1024→512, skip blocks at /8 and
    /4, 3x3 conv to 1 channel, x4 bilinear upsampling; [P] §3.3 "two residual blocks
    connected with E through skip layers").
    """

    def __init__(self, skip8: int = SKIP8_DIM, skip4: int = SKIP4_DIM, value_dim: int = VALUE_DIM) -> None:
        super().__init__()
        self.compress = ResBlock(2 * value_dim, 512)
        self.up_16_8 = UpsampleBlock(skip8, 512, 256, scale=1)
        self.up_8_4 = UpsampleBlock(skip4, 256, 128, scale=2)
        self.pred = nn.Conv2d(128, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, skip8: torch.Tensor, skip4: torch.Tensor) -> torch.Tensor:
        x = self.up_8_4(skip4, self.up_16_8(skip8, self.compress(x)))
        return F.interpolate(self.pred(F.relu(x)), scale_factor=4, mode="bilinear", align_corners=False)


def soft_aggregate(prob: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Soft aggregation of per-object probabilities into K + 1 logits (STCN; [C]
    models/framework_mask.py ``aggregate``): background = Π_k (1 − p_k), then
    logit(p) = log(p / (1 − p)) of [background, p_1..p_K] clamped to [1e-7, 1 − 1e-7].
    A softmax over ``dim`` of the result is a distribution over background + objects.

    Args:
        prob: (..., K, ...) probabilities in [0, 1], objects along ``dim``.
    Returns:
        (..., K + 1, ...) logits, background first.
    """
    new = torch.cat([torch.prod(1 - prob, dim=dim, keepdim=True), prob], dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(new / (1 - new))
