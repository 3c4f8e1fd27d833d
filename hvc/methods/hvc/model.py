"""HVC model (paper §3.1-3.2, Fig. 3, Algorithm 1; the authors' code, github.com/NUST-Machine-Intelligence-Laboratory/HVC models/model.py).

Online encoder = ResNet-18 backbone (output stride 8) + projector + predictor.
Target encoder = backbone + projector, an exponential moving average of the online one
(Eq. 1), never receiving gradients. The pseudo-dynamic module maps the channel
concatenation of two views' features to a 2-channel signal (§3.2.2).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from hvc.methods.base import ema_parameters_
from hvc.methods.hvc.loss import symmetric_hybrid_loss

FEATURE_CHANNELS = {"layer3": 256, "layer4": 512}


class Backbone(nn.Module):
    """ResNet-18 trained from scratch with output stride 8 (paper §3.1; the authors' models/model.py
    ``remove_strides`` on layer3/layer4 and models/resnet.py initialisation).

    Every stride of layer3 and layer4 is 1 (downsample convs included, no dilation), so a
    (B, 3, H, W) input gives layer3 and layer4 maps of (B, 256, H/8, W/8) and
    (B, 512, H/8, W/8). No avgpool/fc. Conv weights ~ N(0, sqrt(2/n)) with n = k*k*out
    channels; the last BN gamma of each residual block starts at 0.
    """

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None, zero_init_residual=True)
        for layer in (net.layer3, net.layer4):
            block = layer[0]
            block.conv1.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor, layer: str = "layer4") -> torch.Tensor:
        """(B, 3, H, W) → (B, C, H/8, W/8); ``layer`` picks layer3 (C=256) or layer4 (C=512)."""
        x = self.layer2(self.layer1(self.stem(x)))
        x = self.layer3(x)
        if layer == "layer3":
            return x
        if layer != "layer4":
            raise ValueError(f"layer must be 'layer3' or 'layer4', got {layer!r}")
        return self.layer4(x)


class SpaceProjection(nn.Module):
    """The space projection module used as projector and predictor (paper §3.1, Eq. 2).

    Shapes: (B, in_dim, h, w) → (B, dim, h, w).

    ``head='paper'``: conv1x1 → BN → ReLU → conv1x1 → BN → ReLU → conv1x1 (the paper's
    description; the middle convs have no bias since BN follows them).
    ``head='official'``: the authors' block (github.com/NUST-Machine-Intelligence-Laboratory/
    HVC, models/model.py ``ProjBlock``), exactly: r = LeakyReLU(BN1(conv1 x)),
    out = LeakyReLU(BN2(conv2 r + r)), conv3(out), LeakyReLU slope 0.01 (PyTorch's default),
    every conv with a bias. Its parameter names are those of ``ProjBlock``
    (conv1, bn1, conv2, bn2, conv3), so the authors' weights load as they are.
    """

    def __init__(self, in_dim: int, dim: int = 256, head: str = "paper") -> None:
        super().__init__()
        if head not in ("paper", "official"):
            raise ValueError(f"head must be 'paper' or 'official', got {head!r}")
        self.official = head == "official"
        bias = self.official
        self.conv1 = nn.Conv2d(in_dim, dim, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(dim)
        self.conv3 = nn.Conv2d(dim, dim, 1)
        self.act = nn.LeakyReLU(0.01) if self.official else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.act(self.bn1(self.conv1(x)))
        if self.official:
            return self.conv3(self.act(self.bn2(self.conv2(r) + r)))
        return self.conv3(self.act(self.bn2(self.conv2(r))))


class PseudoDynamic(nn.Module):
    """Pseudo-dynamic signal generator F_pseudo (paper §3.2.2, Eq. 6; the authors' models/model.py ``Flow``).

    Two consecutive 1x1 convs with BN (and ReLU between): (B, 2C, h, w) → (B, 2, h, w),
    L2-normalised over its 2 channels. ``forward(a, b)`` takes the two views' features
    (B, C, h, w) each and concatenates them index by index, so M1 = f(F1, F2) is the
    forward signal and M2 = f(F2, F1) the backward one.
    """

    def __init__(self, dim: int = 256, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * dim, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2, 1, bias=False),
            nn.BatchNorm2d(2),
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(torch.cat([a, b], dim=1)), dim=1)


class Encoder(nn.Module):
    """Backbone + projector: F_theta of Eq. 2 (without the normalisation)."""

    def __init__(self, proj_dim: int = 256, head: str = "paper") -> None:
        super().__init__()
        self.backbone = Backbone()
        self.projector = SpaceProjection(FEATURE_CHANNELS["layer4"], proj_dim, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def momentum_at(step: int, total_steps: int, base: float = 0.99) -> float:
    """Cosine EMA momentum schedule (BYOL's; the authors' models/model.py ``_update_momentum_encoder``).

    m_k = 1 - (1 - base) * (cos(pi * k / K) + 1) / 2: ``base`` at k = 0, (1 + base)/2 at
    k = K/2, 1 at k = K.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


class HVC(nn.Module):
    """Online/target encoders, predictor and pseudo-dynamic module (paper Fig. 3, Algorithm 1).

    ``embed(v1, v2)`` returns the L2-normalised online predictions ``o1, o2`` and target
    projections ``t1, t2`` (each (B, D, h, w); Eq. 2); the target branch runs under
    ``torch.no_grad``. ``forward`` adds the symmetric hybrid loss (Eq. 10), so that a
    DistributedDataParallel wrapper sees every trained module inside one forward.
    """

    def __init__(
        self,
        proj_dim: int = 256,
        head: str = "paper",
        radius: float = 0.1,
        radius_unit: str = "cell",
        alpha: float = 1.0,
        static: bool = True,
        dynamic: bool = True,
    ) -> None:
        super().__init__()
        self.loss_args = dict(radius=radius, unit=radius_unit, alpha=alpha, static=static, dynamic=dynamic)
        self.online = Encoder(proj_dim, head)
        self.predictor = SpaceProjection(proj_dim, proj_dim, head)
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.pseudo = PseudoDynamic(proj_dim)

    def forward(
        self, v1: torch.Tensor, v2: torch.Tensor, box1: torch.Tensor, box2: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Algorithm 1 for one batch: (B, 3, S, S) views and (B, 4) boxes → loss dict.

        Returns ``loss`` (to back-propagate), ``static`` and ``dynamic`` (both directions summed).
        """
        o1, o2, t1, t2 = self.embed(v1, v2)
        return symmetric_hybrid_loss(o1, o2, t1, t2, box1, box2, self.pseudo, **self.loss_args)

    def embed(self, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Online predictions o1, o2 and target projections t1, t2, L2-normalised (Eq. 2)."""
        # One call per view, as in Algorithm 1: batch-norm statistics are per view.
        o1, o2 = (F.normalize(self.predictor(self.online(v)), dim=1) for v in (v1, v2))
        with torch.no_grad():
            t1, t2 = (F.normalize(self.target(v), dim=1) for v in (v1, v2))
        return o1, o2, t1, t2

    @torch.no_grad()
    def update_target(self, m: float) -> None:
        """EMA update θ_target ← m θ_target + (1 - m) θ_online (Eq. 1); BN buffers copied."""
        ema_parameters_(self.target, self.online, m)
        for bt, bo in zip(self.target.buffers(), self.online.buffers()):
            bt.copy_(bo)


def backbone_key(resnet_key: str) -> str:
    """A torchvision-layout ResNet state-dict key → the :class:`Backbone` key of the same
    tensor: ``conv1.*`` and ``bn1.*`` are ``stem.0.*`` and ``stem.1.*``; layer keys are kept.
    torchvision's ImageNet weights and the authors' checkpoints use that layout."""
    if resnet_key.startswith("conv1."):
        return "stem.0." + resnet_key.removeprefix("conv1.")
    if resnet_key.startswith("bn1."):
        return "stem.1." + resnet_key.removeprefix("bn1.")
    return resnet_key


def backbone_shapes() -> dict[str, tuple[int, ...]]:
    """{key: shape} of the :class:`Backbone` state dict, built on the meta device (no
    memory, no random numbers drawn), to check a checkpoint before loading it."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in Backbone().state_dict().items()}


def build_encoder_for_propagation(state: dict[str, torch.Tensor] | None = None) -> Backbone:
    """A :class:`Backbone` for label propagation, loaded from an encoder-only state dict.

    Args:
        state: ``Backbone.state_dict()`` (as written by the train stage in ``encoder.pt``),
            or None for a random initialisation.
    Raises:
        ValueError: the state dict does not fit a ResNet-18 backbone (another model).
    """
    net = Backbone()
    if state is not None:
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not fit the HVC ResNet-18 backbone: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    return net.eval()
