"""LIIR encoder: MAST's stride-4 ResNet-18 with a learnable absolute position encoding.

Paper: Li et al., "Locality-Aware Inter-and Intra-Video Reconstruction for Self-Supervised
Correspondence Learning", CVPR 2022 (LIIR), §3.2 "Position Encoding and Position Shifting"
(Eq. 6) and §3.3 "Network Configuration". Where the paper is silent, the PyTorch code the
authors' repository points to decides: github.com/shasha521/LIIR_pytorch, models/resnet.py
(``ResNet_hr``) and models/mast_momen.py (``post_convolution``).

Shapes for a (B, 3, H, W) Lab input (H, W multiples of 4; :class:`LIIREncoder` pads other
sizes, :func:`pad_to_stride`):

    conv1 7x7 s2 + BN + ReLU  → (B, 64, H/2, W/2)  + P (1DAPE, 64 × 128 × 128, learnable)
    layer1 (64, stride 1)      → (B, 64, H/2, W/2)
    layer2 (128, stride 2)     → (B, 128, H/4, W/4)
    layer3 (256, stride 1)     → (B, 256, H/4, W/4)
    layer4 (256, stride 1)     → (B, 256, H/4, W/4)   ("layer4")
    post_convolution 3x3       → (B, 64, H/4, W/4)    ("post_conv", the affinity features)

There is no max-pool; only layer2 downsamples ("×2 downsampling is only made in the third
residual block", §3.3, counting the stem as the first). The attribute names follow the
code's modules (``feature_extraction.conv1``, ``feature_extraction.pos_embed1``,
``feature_extraction.layer1.0.conv1``, ``post_convolution``), so the released LIIR_pytorch
checkpoints load into :class:`LIIREncoder` once their other keys are dropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

STRIDE = 4
"""Output stride of the encoder: input pixels per feature cell (§3.3: h = H/4, w = W/4)."""
TRUNK_CHANNELS = 256
"""Channels of layer3/layer4 (§3.3: c = 256; code: ``self.base * 4`` for both layers)."""
FEATURE_CHANNELS = 64
"""Channels of the post-convolution features the affinities use (code: models/mast_momen.py,
``nn.Conv2d(256, 64, kernel_size=3, stride=1, padding=1)``)."""
POSITION_SHAPE = (64, 128, 128)
"""(c', h', w') of the 1DAPE map P: the stem output of a 256 × 256 input (§3.3: c' = 64,
h' = H/2, w' = W/2; code: ``nn.Parameter(torch.zeros(1, 64, 128, 128))``)."""
HEAD_CHANNELS = 128
"""Channels of the stride-8 head of the code's phase 2 (models/mast_momen.py
``conv_semantic = nn.Conv2d(256, 128, kernel_size=3, stride=2, padding=1)``)."""
LAYERS = ("post_conv", "layer4")
"""Feature maps :meth:`LIIREncoder.forward` returns, by name."""


def shift_position(position: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Position shifting (paper §3.2, Fig. 4a): the encoding map circularly rolled by
    ``dy`` rows and ``dx`` columns, cut from the autograd graph ("P̄ related gradients are
    abandoned"), so nothing computed from the result sends gradient to ``position``.

    Args:
        position: (..., h', w') position encoding, e.g. (1, 64, 128, 128).
        dy, dx: steps along the last two axes, in cells of ``position`` (any integer;
            circular boundary, so taken modulo h' and w').
    Returns:
        (..., h', w') tensor, ``torch.roll(position, (dy, dx), (-2, -1))`` detached.
    Raises:
        ValueError: ``position`` has fewer than 2 dimensions.
    """
    if position.dim() < 2:
        raise ValueError(f"position encoding must have at least 2 dimensions, got shape {tuple(position.shape)}")
    return torch.roll(position.detach(), shifts=(int(dy), int(dx)), dims=(-2, -1))


def random_shift(height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """A random (dy, dx) for :func:`shift_position`, each uniform over 0..size-1 (the paper
    shifts "by a random step in horizontal and vertical axes, respectively"; the range is
    not given, a full period covers every circular shift).

    Raises:
        ValueError: a size below 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"shift range must be positive, got {height} x {width}")
    dy = int(torch.randint(height, (1,), generator=generator))
    dx = int(torch.randint(width, (1,), generator=generator))
    return dy, dx


class MASTResNet18(nn.Module):
    """ResNet-18 trunk of MAST/LIIR at output stride 4, with the 1DAPE position encoding.

    Shapes: (B, 3, H, W) normalised Lab → (B, 256, H/4, W/4) (layer4). H and W need not be
    256: P is resized bicubically to the stem output size when they differ (code:
    models/resnet.py ``F.interpolate(self.pos_embed1, ..., mode='bicubic')``).

    Initialisation (code: models/resnet.py): conv weights ~ N(0, sqrt(2 / (k·k·out))),
    BN weight 1 and bias 0, the second BN of every residual block at weight 0
    ("zero gamma"), P = 0.

    Args:
        position_encoding: add P after the stem (LIIR) or not (the MAST baseline).
    """

    def __init__(self, position_encoding: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.use_position = position_encoding
        self.pos_embed1 = nn.Parameter(torch.zeros(1, *POSITION_SHAPE))
        self.inplanes = 64
        self.layer1 = self._make_layer(64, 2, stride=1)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(TRUNK_CHANNELS, 2, stride=1)
        self.layer4 = self._make_layer(TRUNK_CHANNELS, 2, stride=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def position(self, size: tuple[int, int], shift: tuple[int, int] | None = None) -> torch.Tensor:
        """The position map added after the stem, (1, 64, h', w') for a stem output of
        ``size`` = (h', w'): P itself, or with ``shift`` = (dy, dx) the rolled and detached
        P̄ (:func:`shift_position`, rolled on P's own 128 × 128 grid), bicubically resized
        when ``size`` differs from (128, 128)."""
        pos = self.pos_embed1 if shift is None else shift_position(self.pos_embed1, *shift)
        if tuple(pos.shape[-2:]) != tuple(size):
            pos = F.interpolate(pos, size=size, mode="bicubic", align_corners=False)
        return pos

    def forward(self, x: torch.Tensor, shift: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, 3, H, W) → layer4 features (B, 256, H/4, W/4).

        Args:
            x: normalised Lab frames (after colour-channel dropout during training).
            shift: None for query/reference frames (P, trained normally); (dy, dx) for
                frames of other videos (position shifting, §3.2: P̄ receives no gradient).
        Raises:
            ValueError: ``x`` is not (B, 3, H, W) with H and W multiples of 4.
        """
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ValueError(f"LIIR encoder input must be (B, 3, H, W) with H, W multiples of {STRIDE}, got {tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        if self.use_position:
            x = x + self.position((x.shape[-2], x.shape[-1]), shift)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """(B, 3, H, W) → (B, 3, ⌈H/s⌉·s, ⌈W/s⌉·s): zeros appended at the bottom and right
    (in the input's normalised units; [U] evaluate_davis.py ``nn.ZeroPad2d((0, pad_w, 0,
    pad_h))``); ``x`` itself when H and W are already multiples of ``stride``.
    Raises ValueError when ``x`` is not (B, 3, H, W)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"LIIR encoder input must be (B, 3, H, W), got {tuple(x.shape)}")
    pad_h, pad_w = -x.shape[-2] % stride, -x.shape[-1] % stride
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class LIIREncoder(nn.Module):
    """The feature encoder φ(I, P) of LIIR (Eq. 6): :class:`MASTResNet18` followed by the
    3×3 post-convolution 256 → 64 whose output the affinities (Eqs. 1, 4) and label
    propagation use (code: models/mast_momen.py ``feats = post_convolution(feature_extraction(x))``).

    ``forward(x, layer="post_conv", shift=None)``: (B, 3, H, W) normalised Lab →
    (B, 64, ⌈H/4⌉, ⌈W/4⌉) for ``"post_conv"`` or (B, 256, ⌈H/4⌉, ⌈W/4⌉) for ``"layer4"``.
    A frame whose sides are not multiples of the stride (an 854-wide DAVIS frame) is first
    zero-padded at the bottom and right, in normalised Lab, to the next multiple
    (:func:`pad_to_stride`; [U] evaluate_davis.py ``pad_divisible = 4``, ``nn.ZeroPad2d``
    on the normalised frames), so every caller (LIIR's own inference, the generic label
    propagation) gets features of the padded frame.
    Raises ValueError for another layer name or an input that is not (B, 3, H, W).
    """

    def __init__(self, position_encoding: bool = True) -> None:
        super().__init__()
        self.feature_extraction = MASTResNet18(position_encoding)
        self.post_convolution = nn.Conv2d(TRUNK_CHANNELS, FEATURE_CHANNELS, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, layer: str = "post_conv", shift: tuple[int, int] | None = None) -> torch.Tensor:
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        trunk = self.feature_extraction(pad_to_stride(x), shift)
        return trunk if layer == "layer4" else self.post_convolution(trunk)


def stride8_head() -> nn.Conv2d:
    """The code's stride-8 head of phase 2 (not in the paper): layer4 features (B, 256, h, w)
    → (B, 128, ⌈h/2⌉, ⌈w/2⌉) by a 3×3 stride-2 convolution with PyTorch's default
    initialisation (models/mast_momen.py ``conv_semantic``; the ResNet initialisation of
    models/resnet.py does not reach it)."""
    return nn.Conv2d(TRUNK_CHANNELS, HEAD_CHANNELS, kernel_size=3, stride=2, padding=1)
