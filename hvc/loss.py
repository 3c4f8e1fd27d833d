"""Hybrid static-dynamic correspondence loss (paper §3.2.2, Eqs. 7-10, Algorithm 1).

Notation follows the paper: two views with crop boxes c1, c2 (normalised image
coordinates), feature maps F1 (online prediction) and F2 (target projection), the
pseudo-dynamic signals M1 = f(F1, F2), M2 = f(F2, F1), and the positive mask A.
"""

from __future__ import annotations

import torch
from torch import nn


def cell_centres(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Centres of an h x w feature grid in original-image coordinates (Eq. 7).

    Args:
        boxes: (B, 4) crop boxes (x1, y1, x2, y2), normalised as
            (x1/(W-1), y1/(H-1), (x1+w-1)/(W-1), (y1+h-1)/(H-1)) of the original image.
        h, w: feature grid size.
    Returns:
        (B, h*w, 2) centres (x, y) in the same normalised units, row-major over the grid.
    """
    dtype, device = boxes.dtype, boxes.device
    x1, y1, x2, y2 = boxes.unbind(-1)
    gx = (torch.arange(w, dtype=dtype, device=device) + 0.5) / w  # (w,)
    gy = (torch.arange(h, dtype=dtype, device=device) + 0.5) / h  # (h,)
    cx = x1[:, None] + (x2 - x1)[:, None] * gx[None]  # (B, w)
    cy = y1[:, None] + (y2 - y1)[:, None] * gy[None]  # (B, h)
    grid_x = cx[:, None, :].expand(-1, h, -1)
    grid_y = cy[:, :, None].expand(-1, -1, w)
    return torch.stack([grid_x, grid_y], dim=-1).reshape(boxes.shape[0], h * w, 2)


@torch.no_grad()
def positive_mask(
    box1: torch.Tensor, box2: torch.Tensor, h: int, w: int, radius: float, unit: str = "image"
) -> torch.Tensor:
    """Positive region selection mask A of Eq. 8, without gradient.

    A(i, j) = 1 when cell i of view 1 and cell j of view 2 lie within ``radius`` of each
    other in the original image (Eq. 8, D(i, j) <= r).

    Args:
        box1, box2: (B, 4) normalised crop boxes of the two views (see :func:`cell_centres`).
        h, w: feature grid size of both views.
        radius: r.
        unit: ``"image"`` — D in normalised image units, A = D <= r (the paper);
            ``"cell"`` — D divided by the larger of the two views' cell diagonals and
            A = D < r (the authors' code, after PixPro).
    Returns:
        (B, h*w, h*w) float mask of 0/1.
    Raises:
        ValueError: unknown unit.
    """
    c1 = cell_centres(box1, h, w)
    c2 = cell_centres(box2, h, w)
    dist = torch.cdist(c1, c2)  # (B, hw, hw)
    if unit == "image":
        return (dist <= radius).to(box1.dtype)
    if unit == "cell":
        def diag(b: torch.Tensor) -> torch.Tensor:
            return torch.hypot((b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h)

        scale = torch.maximum(diag(box1), diag(box2)).view(-1, 1, 1)
        return (dist / scale < radius).to(box1.dtype)
    raise ValueError(f"unit must be 'image' or 'cell', got {unit!r}")


def masked_similarity(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over positive pairs, per sample (Eq. 9-10 numerator/denominator).

    Args:
        a, b: (B, C, h, w) L2-normalised over C (so the inner product is the cosine).
        mask: (B, hw, hw) positive mask A.
    Returns:
        (B,) sum_ij A(i,j) <a_i, b_j> / sum_ij A(i,j); 0 where A is empty (never NaN).
    """
    B, C = a.shape[:2]
    sim = torch.bmm(a.reshape(B, C, -1).transpose(1, 2), b.reshape(B, C, -1))  # (B, hw, hw)
    total = mask.sum(dim=(1, 2))
    return (sim * mask).sum(dim=(1, 2)) / total.clamp_min(1.0)


def hybrid_loss(
    f1: torch.Tensor,
    f2: torch.Tensor,
    box1: torch.Tensor,
    box2: torch.Tensor,
    pseudo: nn.Module | None,
    radius: float,
    alpha: float = 1.0,
    static: bool = True,
    dynamic: bool = True,
    unit: str = "image",
) -> dict[str, torch.Tensor]:
    """L_hybrid = L_static + alpha * L_dynamic for one ordered view pair (Eq. 10, Algorithm 1).

    Args:
        f1: (B, C, h, w) online predictions of view 1 (L2-normalised, Eq. 2).
        f2: (B, C, h, w) target projections of view 2 (L2-normalised, no gradient).
        box1, box2: (B, 4) normalised crop boxes.
        pseudo: the pseudo-dynamic module (needed when ``dynamic``).
        radius, unit: positive radius r of Eq. 8 and its unit (see :func:`positive_mask`).
        alpha: weight of the dynamic term (Table 7c).
        static, dynamic: which terms to use (Table 6).
    Returns:
        dict with scalar tensors ``loss``, ``static`` (L_static) and ``dynamic`` (L_dynamic),
        each averaged over the batch; a pair with an empty mask contributes 0.
    """
    if f1.shape != f2.shape:
        raise ValueError(f"feature maps differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    h, w = f1.shape[-2:]
    mask = positive_mask(box1.float(), box2.float(), h, w, radius, unit).to(f1.dtype)
    zero = f1.new_zeros(())
    l_static = -masked_similarity(f1, f2, mask).mean() if static else zero
    if dynamic:
        if pseudo is None:
            raise ValueError("dynamic=True needs the pseudo-dynamic module")
        m1, m2 = pseudo(f1, f2), pseudo(f2, f1)  # forward / backward signals (Eq. 6)
        l_dynamic = -masked_similarity(m1, m2, mask).mean()
    else:
        l_dynamic = zero
    return {"loss": l_static + alpha * l_dynamic, "static": l_static, "dynamic": l_dynamic}


def symmetric_hybrid_loss(
    o1: torch.Tensor,
    o2: torch.Tensor,
    t1: torch.Tensor,
    t2: torch.Tensor,
    box1: torch.Tensor,
    box2: torch.Tensor,
    pseudo: nn.Module | None,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """Algorithm 1: hybrid_loss(o1, t2, c1, c2) + hybrid_loss(o2, t1, c2, c1).

    ``o*`` are online predictions, ``t*`` target projections, (B, C, h, w) each; keyword
    arguments go to :func:`hybrid_loss`. Returns the summed ``loss``, ``static`` and ``dynamic``.
    """
    a = hybrid_loss(o1, t2, box1, box2, pseudo, **kwargs)
    b = hybrid_loss(o2, t1, box2, box1, pseudo, **kwargs)
    return {k: a[k] + b[k] for k in a}
