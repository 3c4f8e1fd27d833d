"""STT networks: the ResNet-18 layouts of student and teacher, and the step-1 MoCo encoder.

[P] = Li & Liu, "Spatial-then-Temporal Self-Supervised Learning for Video Correspondence",
CVPR 2023; [C] = github.com/qianduoduolr/Spa-then-Temp (configs/train/train.py,
vcl/models/backbones/resnet.py); [DetCo] = Xie et al., ICCV 2021 / MoCo v2 (step 1, which
[C] does not hold).

Both layouts are torchvision's ResNet-18 (same parameter names and shapes, so one state
dict initialises the other) with the stride of the first block of each stage changed, as
[C]'s backbone does (``strides`` of its ResNet, the stride on the 3x3 conv):

    student ([C] train.py strides=(1, 2, 2, 4), pool_type='none'; Lab input, 256 x 256):
        conv1 s2 → (64, 128²) → layer1 s1 (64, 128²) → layer2 s2 "res3" (128, 64², /4)
        → layer3 s2 "res4" (256, 32², /8) → layer4 s4 "res5" (512, 8², /32)
    teacher ([C] train.py backbone_t strides=(1, 2, 2, 2), max-pool; RGB input):
        conv1 s2 → max-pool s2 → layer1 (64, /4) → layer2 (128, /8) → layer3 (256, /16)
        → layer4 "res5" (512, /32)

Initialisation: torchvision's (Kaiming normal fan-out convs, BN 1/0) with the last BN of
each residual block at 0 ([C] resnet.py ``zero_init_residual=True``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from hvc.methods.base import ema_parameters_

LAYOUTS = ("student", "teacher")
STUDENT_STRIDES = (1, 2, 2, 4)
"""Stride of the first block of layer1..layer4 in the student ([C] configs/train/train.py)."""
TEACHER_STRIDES = (1, 2, 2, 2)
"""Standard ResNet strides of the teacher ([C] configs/train/train.py backbone_t)."""
LEVEL_LAYERS = {"res3": "layer2", "res4": "layer3", "res5": "layer4"}
"""[P]'s level names → torchvision module names."""
CHANNELS = {"layer2": 128, "layer3": 256, "layer4": 512}


def _set_stride(block: nn.Module, stride: int) -> None:
    block.conv1.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


class ResNet18(nn.Module):
    """ResNet-18 trunk in one of :data:`LAYOUTS`.

    ``forward(x, layers=("layer4",))``: (B, 3, H, W) normalised input → dict name → features
    of each requested layer ("layer1".."layer4"), computed only as deep as needed.
    Strides: student layer2 /4, layer3 /8, layer4 /32; teacher layer2 /8, layer3 /16,
    layer4 /32. Input sides must be multiples of 32.

    Raises:
        ValueError: unknown layout or layer, or a bad input shape.
    """

    def __init__(self, layout: str = "student") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        net = resnet18(weights=None, zero_init_residual=True)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool = net.maxpool if layout == "teacher" else nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        strides = STUDENT_STRIDES if layout == "student" else TEACHER_STRIDES
        for name, stride in zip(("layer1", "layer2", "layer3", "layer4"), strides):
            _set_stride(getattr(self, name)[0], stride)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] = ("layer4",)) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"ResNet-18 input must be (B, 3, H, W) with H, W multiples of 32, got {tuple(x.shape)}")
        names = ("layer1", "layer2", "layer3", "layer4")
        unknown = set(layers) - set(names)
        if unknown:
            raise ValueError(f"unknown layers {sorted(unknown)}; known: {names}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: dict[str, torch.Tensor] = {}
        last = max(names.index(n) for n in layers)
        for name in names[: last + 1]:
            x = getattr(self, name)(x)
            if name in layers:
                out[name] = x
        return out


class STTEncoder(nn.Module):
    """The student as label propagation uses it ([P] §4.1: res4 features at stride 8, Lab
    input; [C] configs/test/res18_d8.py strides=(1, 2, 2, 1), out_indices=(2,), no pool).

    ``forward(x, layer="layer3")``: (B, 3, H, W) normalised Lab → (B, 256, ⌈H/8⌉, ⌈W/8⌉)
    for "layer3" (res4) or (B, 128, ⌈H/4⌉, ⌈W/4⌉) for "layer2" (res3) (sizes as the strided
    convolutions round them).
    Its state dict is the student's without layer4 (inference never runs it). Given
    ``trunk`` (the training student), it shares that trunk's modules (no copy).
    Raises ValueError for another layer or a bad shape.
    """

    LAYERS = ("layer2", "layer3")

    def __init__(self, trunk: ResNet18 | None = None) -> None:
        super().__init__()
        trunk = trunk if trunk is not None else ResNet18("student")
        self.conv1, self.bn1, self.relu = trunk.conv1, trunk.bn1, trunk.relu
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3

    def forward(self, x: torch.Tensor, layer: str = "layer3") -> torch.Tensor:
        if layer not in self.LAYERS:
            raise ValueError(f"layer must be one of {self.LAYERS}, got {layer!r}")
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < 8:
            raise ValueError(f"STT encoder input must be (B, 3, H, W) with H, W >= 8, got {tuple(x.shape)}")
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return x if layer == "layer2" else self.layer3(x)


# --------------------------------------------------------------------------- step 1: MoCo


class ProjectionHead(nn.Module):
    """MoCo v2's 2-layer MLP head ([DetCo] global head): global average pool of the res5
    map, Linear(512, hidden) - ReLU - Linear(hidden, dim). (B, 512, h, w) → (B, dim)."""

    def __init__(self, hidden: int = 512, dim: int = 128) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(CHANNELS["layer4"], hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.mean(dim=(-2, -1)))))


class MoCo(nn.Module):
    """Step 1 ([P] §3.1, Eq. 1): an image-level InfoNCE with a momentum key encoder and a
    queue of negative keys, MoCo v2 style (the global branch of [DetCo]; DetCo's local
    patch branch is not implemented).

    Modules: ``trunk`` (the teacher-layout :class:`ResNet18` being trained: it becomes the
    teacher and the student's initialisation), ``head``; ``key_trunk``/``key_head`` their
    EMA copies (no gradient). Buffers: ``queue`` (dim, K) L2-normalised keys (random at
    start, as MoCo), ``queue_ptr`` ().

    Args:
        hidden, dim: head widths; queue: K; temperature: tau_c.
    """

    def __init__(self, hidden: int = 512, dim: int = 128, queue: int = 65536, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature
        self.trunk = ResNet18("teacher")
        self.head = ProjectionHead(hidden, dim)
        self.key_trunk = copy.deepcopy(self.trunk)
        self.key_head = copy.deepcopy(self.head)
        for p in list(self.key_trunk.parameters()) + list(self.key_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def embed(self, x: torch.Tensor, key: bool = False) -> torch.Tensor:
        """(B, 3, S, S) normalised RGB → (B, dim) L2-normalised embedding (query or key encoder)."""
        trunk, head = (self.key_trunk, self.key_head) if key else (self.trunk, self.head)
        return F.normalize(head(trunk(x)["layer4"]), dim=1)

    def loss(self, view_q: torch.Tensor, view_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """InfoNCE of Eq. 1 for a batch of two views: q from ``view_q``, the positive k+ from
        ``view_k`` through the key encoder (no gradient), negatives = the queue.

        Returns:
            (loss, accuracy of the positive among the K + 1 logits, the keys (B, dim)) —
            the keys are enqueued by :meth:`enqueue` after the optimizer step.
        """
        q = self.embed(view_q)
        with torch.no_grad():
            k = self.embed(view_k, key=True)
        return infonce(q, k, self.queue.clone().detach(), self.temperature) + (k,)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """θ_k ← m θ_k + (1 - m) θ_q for trunk and head (MoCo); BN buffers copied."""
        ema_parameters_(self.key_trunk, self.trunk, momentum)
        ema_parameters_(self.key_head, self.head, momentum)
        for kb, qb in zip(self.key_trunk.buffers(), self.trunk.buffers()):
            kb.copy_(qb)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: write (B, dim) keys at the pointer (wrapping around) and advance it."""
        n = self.queue.shape[1]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % n
        self.queue[:, slots] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % n)


def infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_ncc of [P] Eq. 1, averaged over the batch: −log exp(q·k+/τ) / (exp(q·k+/τ) + Σ_i exp(q·k_i⁻/τ)).

    Args:
        q, k: (B, d) L2-normalised queries and their positive keys.
        queue: (d, K) negative keys.
        temperature: τ_c.
    Returns:
        (loss scalar, accuracy scalar: share of rows whose positive has the largest logit).
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([pos, q @ queue], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == 0).float().mean().detach()
