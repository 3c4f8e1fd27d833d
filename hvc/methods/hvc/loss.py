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

    Cell (i, j) of a box (x1, y1, x2, y2) has its centre at
    (x1 + (j + 0.5) * (x2 - x1) / w, y1 + (i + 0.5) * (y2 - y1) / h), computed in the same
    order of floating-point operations as the authors' code (models/model.py
    ``hybrid_loss``), so that the positive mask of Eq. 8 agrees entry for entry.

    Args:
        boxes: (B, 4) crop boxes (x1, y1, x2, y2), normalised as
            (x1/(W-1), y1/(H-1), (x1+w-1)/(W-1), (y1+h-1)/(H-1)) of the original image.
        h, w: feature grid size.
    Returns:
        (B, h*w, 2) centres (x, y) in the same normalised units, row-major over the grid.
    """
    dtype, device = boxes.dtype, boxes.device
    x1, y1, x2, y2 = (c.view(-1, 1, 1) for c in boxes.unbind(-1))
    gx = torch.arange(0.0, float(w), dtype=dtype, device=device).view(1, 1, -1).expand(1, h, w)
    gy = torch.arange(0.0, float(h), dtype=dtype, device=device).view(1, -1, 1).expand(1, h, w)
    cx = (gx + 0.5) * ((x2 - x1) / w) + x1  # (B, h, w)
    cy = (gy + 0.5) * ((y2 - y1) / h) + y1
    return torch.stack([cx, cy], dim=-1).reshape(boxes.shape[0], h * w, 2)


@torch.no_grad()
def positive_mask(
    box1: torch.Tensor, box2: torch.Tensor, h: int, w: int, radius: float, unit: str = "cell"
) -> torch.Tensor:
    """Positive region selection mask A of Eq. 8, without gradient.

    A(i, j) = 1 when cell i of view 1 and cell j of view 2 lie within ``radius`` of each
    other in the original image (Eq. 8). D is computed exactly, as the square root of the
    summed squared coordinate differences (``torch.cdist``'s matrix-product path rounds
    distances near the boundary the other way and flips mask entries).

    Args:
        box1, box2: (B, 4) normalised crop boxes of the two views (see :func:`cell_centres`).
        h, w: feature grid size of both views.
        radius: r.
        unit: ``"cell"`` (default): D divided by the larger of the two views' feature-cell
            diagonals and A = D < r, as in the authors' code (github.com/
            NUST-Machine-Intelligence-Laboratory/HVC, models/model.py ``hybrid_loss``,
            after PixPro); this is the reading that gives the positive counts of the paper's
            Fig. 8 (about 54 per 32x32 crop pair at r = 0.1). ``"image"``: D in normalised
            image units and A = D <= r (a literal reading of Eq. 8; about 41,600 positives
            per pair at r = 0.1).
    Returns:
        (B, h*w, h*w) float mask of 0/1, in ``box1``'s dtype.
    Raises:
        ValueError: unknown unit.
    """
    if unit not in ("image", "cell"):
        raise ValueError(f"unit must be 'image' or 'cell', got {unit!r}")
    c1 = cell_centres(box1, h, w)
    c2 = cell_centres(box2, h, w)
    dx = c1[:, :, None, 0] - c2[:, None, :, 0]  # (B, hw, hw)
    dy = c1[:, :, None, 1] - c2[:, None, :, 1]
    dist = torch.sqrt(dx**2 + dy**2)
    if unit == "image":
        return (dist <= radius).to(box1.dtype)

    def diag(b: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(((b[:, 2] - b[:, 0]) / w) ** 2 + ((b[:, 3] - b[:, 1]) / h) ** 2)

    scale = torch.maximum(diag(box1), diag(box2)).view(-1, 1, 1)
    return (dist / scale < radius).to(box1.dtype)


def masked_similarity(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over positive pairs, per sample (Eq. 9-10 numerator/denominator).

    Args:
        a, b: (B, C, h, w) L2-normalised over C (so the inner product is the cosine).
        mask: (B, hw, hw) positive mask A.
    Returns:
        (B,) sum_ij A(i,j) <a_i, b_j> / (sum_ij A(i,j) + 1e-6); 0 where A is empty (never
        NaN). The 1e-6 is the authors' (models/model.py ``hybrid_loss``).
    """
    B, C = a.shape[:2]
    sim = torch.bmm(a.reshape(B, C, -1).transpose(1, 2), b.reshape(B, C, -1))  # (B, hw, hw)
    total = mask.sum(dim=(1, 2))
    return (sim * mask).sum(dim=(1, 2)) / (total + 1e-6)


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
    unit: str = "cell",
    scale: float = 2.0,
) -> dict[str, torch.Tensor]:
    """L_hybrid = L_static + alpha * L_dynamic for one ordered view pair (Eq. 10, Algorithm 1).

    The returned ``loss`` is ``scale * L_hybrid``: the authors' code (models/model.py
    ``hybrid_loss``) returns -2 x (static similarity + dynamic similarity) per direction,
    BYOL-style; with the default ``scale = 2`` and ``alpha = 1`` our logged and optimised
    loss is that same number, so training curves compare with the authors'. The minimiser
    is the same for any positive scale (Adam is almost invariant to it).

    Args:
        f1: (B, C, h, w) online predictions of view 1 (L2-normalised, Eq. 2).
        f2: (B, C, h, w) target projections of view 2 (L2-normalised, no gradient).
        box1, box2: (B, 4) normalised crop boxes.
        pseudo: the pseudo-dynamic module (needed when ``dynamic``).
        radius, unit: positive radius r of Eq. 8 and its unit (see :func:`positive_mask`).
        alpha: weight of the dynamic term (Table 7c).
        static, dynamic: which terms to use (Table 6).
        scale: factor of the returned ``loss`` (2 in the authors' code).
    Returns:
        dict with scalar tensors ``loss`` (``scale * (L_static + alpha * L_dynamic)``),
        ``static`` (L_static of Eq. 9) and ``dynamic`` (L_dynamic), each averaged over the
        batch; a pair with an empty mask contributes 0.
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
    return {"loss": scale * (l_static + alpha * l_dynamic), "static": l_static, "dynamic": l_dynamic}


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
    arguments go to :func:`hybrid_loss`. Returns the summed ``loss``, ``static`` and
    ``dynamic``; with the defaults, ``loss`` equals the value the authors' code returns
    (models/model.py ``HVC.forward``).
    """
    a = hybrid_loss(o1, t2, box1, box2, pseudo, **kwargs)
    b = hybrid_loss(o2, t1, box2, box1, pseudo, **kwargs)
    return {k: a[k] + b[k] for k in a}
