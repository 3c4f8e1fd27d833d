"""Encoders not trained here that HVC's tables compare with, in HVC's stride-8 ResNet-18
backbone (its registry entry's ``encoders``): the ImageNet-supervised ResNet-18 (Tables 1, 5).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hvc.io import DataError, first_line
from hvc.methods.hvc.model import backbone_key, build_encoder_for_propagation


def imagenet_encoder(p=None, seed: int = 0) -> torch.nn.Module:
    """torchvision's ImageNet-supervised ResNet-18 (IMAGENET1K_V1) in the stride-8 backbone,
    frozen, in eval mode (the parameters ``p`` and ``seed`` are not used: nothing is random).

    Raises:
        DataError: naming the torch hub cache file, when the weights are neither cached nor
            downloadable (no network) or the download is corrupt.
    """
    state = _imagenet_resnet18_state()
    return build_encoder_for_propagation({backbone_key(k): v for k, v in state.items() if not k.startswith("fc.")})


def _imagenet_resnet18_state() -> dict:
    """torchvision's ImageNet ResNet-18 state dict (IMAGENET1K_V1), from the torch hub
    cache or downloaded into it; a DataError naming the cache file when that fails."""
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    try:
        return resnet18(weights=weights).state_dict()
    except Exception as e:  # noqa: BLE001 - URLError, OSError, RuntimeError (hash), EOFError...
        raise DataError(
            cached,
            f"ImageNet ResNet-18 weights unavailable ({type(e).__name__}: {first_line(e)}); without network, "
            f"download {weights.url} elsewhere and put it here",
        ) from None
