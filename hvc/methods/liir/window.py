"""Square-window correlations of LIIR at inference size, by batched matrix products.

The same numbers as :func:`hvc.methods.liir.loss.window_logits` (the code's
``SpatialCorrelationSampler(patch_size=2R+1)``: raw dot products of each query cell with the
reference cells of its (2R+1)² window, 0 where the window leaves the frame), computed the way
the generic label propagation computes its local affinities (:class:`hvc.propagation._Bands`):
query columns are cut into segments of ``s`` columns; all queries of one segment and one row
reach into the same ``s + 2R`` columns of a reference row, so one (s, C) × (C, s + 2R)
product per (row, segment, window row) gives them all, and the (2R+1) window columns of
each query are a strided band of that product. Memory O(C·h·w + h·w·(2R+1)·(s+2R)) instead
of unfold's O(C·(2R+1)²·h·w); several references are one batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def window_correlation(query: torch.Tensor, ref: torch.Tensor, radius: int, segment: int = 8) -> torch.Tensor:
    """Dot products of every query cell with the reference cells of its square window.

    Args:
        query, ref: (B, C, h, w) features (e.g. B references of one query frame, the query
            expanded over the batch).
        radius: R ≥ 0, window radius in feature cells; P = 2R + 1.
        segment: query columns per matrix product (speed only; the result does not depend
            on it beyond float rounding).
    Returns:
        (B, h·w, P²) logits; row n is query cell n (row-major), column k = ky·P + kx the
        reference cell at offset (ky - R, kx - R); 0 where that cell is outside the frame
        (zero padding, as the code's correlation sampler).
    Raises:
        ValueError: shapes differ or are not 4-d, R < 0 or segment < 1.
    """
    if query.dim() != 4 or query.shape != ref.shape:
        raise ValueError(f"query and reference features must both be (B, C, h, w) of one shape, got {tuple(query.shape)} and {tuple(ref.shape)}")
    if radius < 0 or segment < 1:
        raise ValueError(f"need radius >= 0 and segment >= 1, got {radius}, {segment}")
    b, c, h, w = query.shape
    p, s = 2 * radius + 1, min(segment, w)
    n = math.ceil(w / s)
    span = s + 2 * radius  # reference columns one segment reaches
    q = F.pad(query, (0, n * s - w)).permute(2, 0, 3, 1).reshape(h, b, n, s, c)
    keys = F.pad(ref, (radius, n * s - w + radius, radius, radius)).permute(2, 0, 3, 1)  # (h + 2R, B, n·s + 2R, C)
    keys = keys.unfold(2, span, s).transpose(-1, -2).contiguous()  # (h + 2R, B, n, span, C): each segment's columns
    out = query.new_empty(p, h, b, n, s, p)
    for ky in range(p):
        prod = torch.matmul(q, keys[ky : ky + h].transpose(-1, -2))  # (h, B, n, s, span)
        st = prod.stride()
        # query j of a segment reads reference columns j .. j + 2R of the segment's span
        out[ky] = prod.as_strided((h, b, n, s, p), (st[0], st[1], st[2], st[3] + 1, 1), prod.storage_offset())
    out = out.permute(2, 1, 3, 4, 0, 5).reshape(b, h, n * s, p * p)[:, :, :w]
    return out.reshape(b, h * w, p * p)
