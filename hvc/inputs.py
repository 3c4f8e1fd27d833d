"""Input normalisation shared by training and label propagation: the mean/std per colour
channel of each method's input, and CIE Lab conversion.
"""

from __future__ import annotations

import numpy as np
import torch

# Input mean/std per colour channel. RGB entries are for images scaled to [0, 1]: "imagenet"
# is ImageNet's pair (the authors' HVC inference); "cifar" is the pair the authors' HVC
# training script uses (github.com/NUST-Machine-Intelligence-Laboratory/HVC, train_img.py:
# Normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010])). "lab" is for CIE
# Lab input (L in [0, 100], a and b about [-128, 127]) as in MAST and LIIR
# (github.com/shasha521/LIIR_pytorch, functional/feeder/dataset: mean (50, 0, 0),
# std (50, 127, 127)).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "lab": ((50.0, 0.0, 0.0), (50.0, 127.0, 127.0)),
}
COLOUR_SPACE_OF = {"imagenet": "rgb", "cifar": "rgb", "lab": "lab"}


def normalize_input(x: torch.Tensor, normalization: str = "imagenet", colour_space: str | None = None) -> torch.Tensor:
    """uint8 or [0, 1] float RGB (..., 3, H, W) → normalised float input of the same shape.

    ``colour_space="lab"`` converts to CIE Lab (D65, skimage.color.rgb2lab) before the
    mean/std of ``normalization``; by default the colour space is the normalisation's
    (:data:`COLOUR_SPACE_OF`).
    Raises:
        ValueError: unknown normalisation or colour space, or a normalisation of the other
            colour space.
    """
    if normalization not in NORMALIZATION:
        raise ValueError(f"normalization must be one of {sorted(NORMALIZATION)}, got {normalization!r}")
    space = colour_space or COLOUR_SPACE_OF[normalization]
    if space != COLOUR_SPACE_OF[normalization]:
        raise ValueError(f"normalization {normalization!r} is for {COLOUR_SPACE_OF[normalization]} input, not {space!r}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if space == "lab":
        x = rgb_to_lab(x)
    mean, std = NORMALIZATION[normalization]
    shape = (3, 1, 1)
    return (x - torch.tensor(mean, dtype=x.dtype).view(shape)) / torch.tensor(std, dtype=x.dtype).view(shape)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (..., 3, H, W) float → CIE Lab (..., 3, H, W) float32 (L in [0, 100]),
    D65 white point, via ``skimage.color.rgb2lab`` (on the CPU)."""
    from skimage.color import rgb2lab

    rgb = x.detach().cpu().movedim(-3, -1).clamp(0, 1).numpy()
    lab = rgb2lab(rgb.astype(np.float64), channel_axis=-1).astype(np.float32)
    return torch.from_numpy(lab).movedim(-1, -3).to(x.device)
