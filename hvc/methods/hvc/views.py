"""Two cropped views of one static image, with their crop boxes (paper §3.2.2, Table 7b).

Each view is an independent RandomResizedCrop of the image; its box is recorded in
normalised original-image coordinates, (x1/(W-1), y1/(H-1), (x1+w-1)/(W-1), (y1+h-1)/(H-1))
as in the authors' code, so the loss can map feature cells back to the image (Eq. 7).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from hvc.inputs import NORMALIZATION

AUGMENTATIONS = ("crop", "affine", "color", "blur")


def extra_augmentation(level: str) -> v2.Transform | None:
    """The cumulative augmentations of Table 7b after cropping.

    ``crop``: none; ``affine``: + RandomAffine / RandomPerspective; ``color``: + colour
    jitter; ``blur``: + Gaussian blur. Like the authors' code, only the crop is recorded
    in the box; the extra spatial jitter is not modelled by the positive mask.
    """
    if level not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {level!r}")
    steps: list[v2.Transform] = []
    rank = AUGMENTATIONS.index(level)
    if rank >= 1:
        steps += [v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)), v2.RandomPerspective(0.2, p=0.5)]
    if rank >= 2:
        steps += [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    if rank >= 3:
        steps += [v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=0.5)]
    return v2.Compose(steps) if steps else None


class TwoViews:
    """Callable: image (3, H, W) uint8 → (view1, view2, box1, box2).

    Views are (3, S, S) float, normalised with ``normalization`` mean/std; boxes are (4,)
    float. Random draws use torch's global generator: seed it per sample for
    reproducible views (the training loader does).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.0, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        augment: str = "crop",
        normalization: str = "imagenet",
    ) -> None:
        self.size = size
        self.crop = v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)
        self.extra = extra_augmentation(augment)
        mean, std = NORMALIZATION[normalization]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        v1, b1 = self._one(image)
        v2_, b2 = self._one(image)
        return v1, v2_, b1, b2

    def _one(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random view (3, S, S) float and its normalised box (4,)."""
        H, W = image.shape[-2:]
        params = self.crop.make_params([image])
        i, j, h, w = params["top"], params["left"], params["height"], params["width"]
        out = v2.functional.resized_crop(image, i, j, h, w, [self.size, self.size], antialias=True)
        if self.extra is not None:
            out = self.extra(out)
        box = torch.tensor(
            [j / max(W - 1, 1), i / max(H - 1, 1), (j + w - 1) / max(W - 1, 1), (i + h - 1) / max(H - 1, 1)],
            dtype=torch.float32,
        )
        out = (out.float() / 255.0 - self.mean) / self.std
        return out, box
