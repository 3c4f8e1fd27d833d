"""The toy's trainable method."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hvc.methods.base import ClipCrop, DataSpec, EncoderSpec, Method, Phase


class ToyEncoder(nn.Module):
    """(B, 3, H, W) → (B, width, H, W) features (stride 1)."""

    def __init__(self, width: int = 8, activation: str = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Conv2d(width, 3, 1)
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()

    def forward(self, x: torch.Tensor, layer: str = "feat") -> torch.Tensor:
        return self.act(self.conv(x))


class Still:
    """Image (3, H, W) uint8 → {"frames": (2, 3, S, S)}: the image and a shifted copy."""

    def __init__(self, size: int, shift: int) -> None:
        self.crop, self.shift = ClipCrop(size, normalization="lab"), shift

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        frames = self.crop(image[None])["frames"][0]
        return {"frames": torch.stack([frames, frames.roll(self.shift, -1)])}


class Toy(Method):
    """Predicts the second frame of a pair from the first (MSE)."""

    name = "toy"
    batch_kind = "clips"

    def __init__(self, width: int = 8, activation: str = "relu", still_share: float = 0.5) -> None:
        super().__init__()
        self.net = ToyEncoder(width, activation)
        self.still_share = still_share
        self.phase = 0
        self.started: list[int] = []

    @classmethod
    def build(cls, params) -> Toy:
        t = params.toy
        return cls(t.width, t.activation, t.still_share)

    def phases(self) -> tuple[Phase, ...]:
        return (Phase("still", "views", self.still_share), Phase("motion", "clips", 1.0 - self.still_share))

    def start_phase(self, phase: int) -> None:
        self.phase = phase
        self.started.append(phase)

    def data_spec(self, params, phase: int = 0) -> DataSpec:
        size = params.train.crop_size
        if phase == 0:
            return DataSpec("views", Still(size, params.toy.shift))
        return DataSpec("clips", ClipCrop(size, normalization="lab"), 2, 1, batch_size=params.toy.motion_batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        f = batch["frames"]
        pred = self.net.head(self.net(f[:, 0]))
        loss = F.mse_loss(pred, f[:, 1])
        return {"loss": loss, "mse": loss.detach(), "phase": torch.tensor(float(self.phase))}

    def make_optimizer(self, params, fused: bool = False) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=params.train.lr * params.toy.lr_scale)

    def encoder(self) -> nn.Module:
        return self.net

    @classmethod
    def encoder_spec(cls) -> EncoderSpec:
        return EncoderSpec("toy", "lab", "lab", 1, ("feat",), "feat")

    @classmethod
    def load_encoder(cls, state, spec) -> nn.Module:
        net = ToyEncoder()
        if state is not None:
            net = ToyEncoder(state["conv.weight"].shape[0])
            net.load_state_dict(state)
        return net.eval()


METHOD = Toy
