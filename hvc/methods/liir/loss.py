"""LIIR affinities, reconstruction, inter-video negatives and the compactness prior.

Paper: Li et al., "Locality-Aware Inter-and Intra-Video Reconstruction for Self-Supervised
Correspondence Learning", CVPR 2022 (LIIR): Eqs. 1-3 (intra-video reconstruction), Eqs. 4-5
(inter-and intra-video reconstruction), Eqs. 7-8 (spatial compactness prior), §3.3 and
App. A, C. Where the paper is silent the code its repository points to decides:
github.com/shasha521/LIIR_pytorch, models/colorizer_momen.py (window correlation,
compact target, label sub-sampling), main_dis.py (loss scale and form).

Conventions. Features are (B, C, h, w) at stride 4. A local affinity is (B, h·w, P²): row
n is query pixel n (row-major over h × w), column k = ky·P + kx is the reference pixel at
offset (ky - R, kx - R) from it, P = 2R + 1 (the code's ``SpatialCorrelationSampler`` with
``patch_size = P``). Window cells outside the reference frame are masked out (probability 0)
by default; the code instead lets them take part with correlation 0 and label 0 (zero
padding), which :func:`border_valid` gives with ``border="zero"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_maps(query: torch.Tensor, ref: torch.Tensor) -> None:
    if query.dim() != 4 or query.shape != ref.shape:
        raise ValueError(
            f"query and reference features must both be (B, C, h, w) of one shape, got {tuple(query.shape)} and {tuple(ref.shape)}"
        )


def window_size(radius: int) -> int:
    """P = 2R + 1, the side of the square search window of radius R (feature cells).
    Raises ValueError for R < 0."""
    if radius < 0:
        raise ValueError(f"window radius must be >= 0, got {radius}")
    return 2 * radius + 1


def window_valid(height: int, width: int, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """Which window cells fall inside an h × w reference frame: bool (h·w, P²)."""
    ones = torch.ones(1, 1, height, width, device=device)
    inside = F.unfold(ones, window_size(radius), padding=radius)  # (1, P², h·w)
    return inside[0].t() > 0.5


def border_valid(valid: torch.Tensor, border: str) -> torch.Tensor:
    """The window cells that take part in the softmax: ``valid`` (h·w, P²) for
    ``border="mask"`` (cells outside the frame left out), every cell for ``"zero"`` (they
    count with the dot product 0 :func:`window_logits` gives them, and label 0, as the
    code's correlation sampler and ``F.unfold(padding=R)``). Raises ValueError for another
    ``border``."""
    if border == "mask":
        return valid
    if border == "zero":
        return torch.ones_like(valid)
    raise ValueError(f"border must be 'mask' or 'zero', got {border!r}")


def window_logits(query: torch.Tensor, ref: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot products q_i · r_j of each query pixel with the reference pixels of its window
    (Eq. 1's exponent: raw dot product, no temperature; the window of radius R is the code's
    ``SpatialCorrelationSampler(patch_size=2R+1)``).

    Args:
        query, ref: (B, C, h, w) features of the query and reference frames.
        radius: R, window radius in feature cells (training: 6, code models/mast_momen.py).
    Returns:
        (logits, valid): logits (B, h·w, P²) (0 where the cell is outside the frame) and
        valid (h·w, P²) bool.
    Raises:
        ValueError: shapes differ or are not 4-d, or R < 0.
    """
    _check_maps(query, ref)
    b, c, h, w = query.shape
    p = window_size(radius)
    cols = F.unfold(ref, p, padding=radius).view(b, c, p * p, h * w)
    logits = torch.einsum("bcn,bckn->bnk", query.flatten(2), cols)
    return logits, window_valid(h, w, radius, query.device)


def window_softmax(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Intra-video affinity A (Eq. 1) restricted to the window: softmax over the valid
    cells of each row. (B, h·w, P²) logits, (h·w, P²) bool → (B, h·w, P²), rows sum to 1."""
    return logits.masked_fill(~valid, float("-inf")).softmax(dim=-1)


def inter_intra_affinity(logits: torch.Tensor, valid: torch.Tensor, neg_logits: torch.Tensor, neg_valid: torch.Tensor) -> torch.Tensor:
    """Inter-and intra-video affinity A′ (Eq. 4): exp(q_i·r_j) divided by the sum over the
    reference window *and* over the negatives of other videos.

    Args:
        logits: (B, h·w, P²) window dot products (:func:`window_logits`).
        valid: (h·w, P²) bool, window cells inside the frame.
        neg_logits: (B, h·w, K) dot products q_i · n_k with the negatives.
        neg_valid: (B, K) bool, negatives usable by each batch element (filled bank slots
            of *other* videos, :meth:`MemoryBank.negatives`); all False gives A′ = A.
    Returns:
        (B, h·w, P²) affinity over the window only (the negatives enter the normalisation,
        not the reconstruction, Eq. 5): rows sum to ≤ 1.
    Raises:
        ValueError: batch or query sizes disagree.
    """
    if neg_logits.shape[:2] != logits.shape[:2] or neg_valid.shape != (neg_logits.shape[0], neg_logits.shape[2]):
        raise ValueError(
            f"negative logits {tuple(neg_logits.shape)} / mask {tuple(neg_valid.shape)} do not fit window logits {tuple(logits.shape)}"
        )
    intra = logits.masked_fill(~valid, float("-inf"))
    inter = neg_logits.masked_fill(~neg_valid[:, None, :], float("-inf"))
    norm = torch.logsumexp(torch.cat([intra, inter], dim=-1), dim=-1, keepdim=True)
    return torch.exp(intra - norm)


def subsample_labels(labels: torch.Tensor, stride: int) -> torch.Tensor:
    """Labels on the feature grid: every ``stride``-th pixel, (B, L, H, W) → (B, L, H/s, W/s)
    (code: models/colorizer_momen.py ``prep``, ``image[:, :, ::D, ::D]`` with D = 4).
    Raises ValueError when H or W is not a multiple of ``stride``."""
    if labels.dim() != 4 or labels.shape[-2] % stride or labels.shape[-1] % stride:
        raise ValueError(f"labels must be (B, L, H, W) with H, W multiples of {stride}, got {tuple(labels.shape)}")
    return labels[:, :, ::stride, ::stride]


def reconstruct(affinity: torch.Tensor, ref_labels: torch.Tensor, radius: int) -> torch.Tensor:
    """Reconstruction by copy (Eqs. 2 and 5): Ŷ_q(i) = Σ_j A(i, j) Y_r(j) over the window.

    Args:
        affinity: (B, h·w, P²) local affinity (A, A′ or the compact Ã).
        ref_labels: (B, L, h, w) reference values on the feature grid (a Lab channel in
            training, one-hot masks in propagation).
        radius: R of the window the affinity was computed with.
    Returns:
        (B, L, h, w) reconstructed query values (same units as ``ref_labels``).
    Raises:
        ValueError: sizes disagree.
    """
    b, l, h, w = ref_labels.shape
    p = window_size(radius)
    if affinity.shape != (b, h * w, p * p):
        raise ValueError(f"affinity {tuple(affinity.shape)} does not fit labels {tuple(ref_labels.shape)} with radius {radius}")
    cols = F.unfold(ref_labels, p, padding=radius).view(b, l, p * p, h * w)
    return torch.einsum("bnk,blkn->bln", affinity, cols).view(b, l, h, w)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1", scale: float = 20.0) -> torch.Tensor:
    """L_res (Eq. 3) between the reconstruction and the query target.

    ``pred`` (B, L, h, w) is upsampled bilinearly to the target's (H, W) first (code:
    main_dis.py ``F.interpolate(outputs, (h, w), mode='bilinear')``). ``kind="smooth_l1"``:
    mean smooth-L1 of ``scale``·pred vs ``scale``·target, scale 20 (code: main_dis.py);
    ``kind="l2"``: mean squared error (the paper's ‖·‖₂, Eq. 3). Returns a scalar.
    Raises ValueError for another kind or a batch/channel mismatch.
    """
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"reconstruction {tuple(pred.shape)} and target {tuple(target.shape)} differ in batch or channels")
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred * scale, target * scale)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"reconstruction loss must be 'smooth_l1' or 'l2', got {kind!r}")


# --------------------------------------------------------------------------- memory bank


def sample_points(features: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` distinct feature vectors per frame at uniformly random positions (LIIR
    §3.3 / App. C: "we sample 4 feature points from each stored frame").

    (B, C, h, w) → (B, count, C). Raises ValueError when count is not in 1..h·w.
    """
    b, c, h, w = features.shape
    if not 1 <= count <= h * w:
        raise ValueError(f"points per frame must be in 1..{h * w}, got {count}")
    order = torch.rand(b, h * w, generator=generator, device="cpu").argsort(dim=1)[:, :count].to(features.device)
    flat = features.flatten(2).transpose(1, 2)  # (B, h·w, C)
    return torch.gather(flat, 1, order[:, :, None].expand(b, count, c))


class MemoryBank(nn.Module):
    """FIFO memory bank of other videos' frame features for the inter-video negatives
    (LIIR §3.3: "a memory bank of 1,440 frames from different videos"; FIFO queue as in the
    code, models/mast_momen.py ``_dequeue_and_enqueue``).

    Each slot holds ``points`` feature vectors of one frame (the points sampled from it,
    :func:`sample_points`, drawn once when the frame is pushed and shared by every query
    pixel; the paper does not say how its 4 points per frame are drawn) and the id of its
    video. Buffers (saved in the state dict):
    ``feats`` (N, K, C), ``video_ids`` (N,) int64, ``filled`` (N,) bool, ``pointer`` ().

    Args:
        frames: N, number of frames held.
        points: K, feature points stored per frame.
        channels: C, feature channels.
    """

    def __init__(self, frames: int, points: int, channels: int) -> None:
        super().__init__()
        if frames < 1 or points < 1 or channels < 1:
            raise ValueError(f"memory bank sizes must be positive, got frames={frames}, points={points}, channels={channels}")
        self.register_buffer("feats", torch.zeros(frames, points, channels))
        self.register_buffer("video_ids", torch.full((frames,), -1, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(frames, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, points: torch.Tensor, video_ids: torch.Tensor) -> None:
        """Enqueue B frames, overwriting the oldest slots.

        Args:
            points: (B, K, C) feature points of B frames (detached here).
            video_ids: (B,) int64 video of each frame.
        Raises:
            ValueError: shapes do not fit the bank.
        """
        n, k, c = self.feats.shape
        if points.dim() != 3 or points.shape[1:] != (k, c) or video_ids.shape != (points.shape[0],):
            raise ValueError(
                f"bank push needs (B, {k}, {c}) points and (B,) video ids, got {tuple(points.shape)} and {tuple(video_ids.shape)}"
            )
        slots = (self.pointer + torch.arange(points.shape[0], device=self.feats.device)) % n
        self.feats[slots] = points.detach().to(self.feats.dtype)
        self.video_ids[slots] = video_ids.to(self.video_ids)
        self.filled[slots] = True
        self.pointer.copy_((self.pointer + points.shape[0]) % n)

    def negatives(self, video_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank as negatives for a batch of B clips.

        Args:
            video_ids: (B,) int64 video of each clip.
        Returns:
            (feats, valid): feats (N·K, C) every stored point; valid (B, N·K) bool, True
            where the slot is filled and its video differs from the clip's (Eq. 4: the
            negatives come from "the whole training dataset, except the source video").
        """
        n, k, c = self.feats.shape
        usable = self.filled[None, :] & (self.video_ids[None, :] != video_ids.to(self.video_ids)[:, None])  # (B, N)
        return self.feats.reshape(n * k, c), usable.repeat_interleave(k, dim=1)


def negative_logits(query: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """q_i · n_k for every query pixel and negative: (B, C, h, w), (K, C) → (B, h·w, K)."""
    return torch.einsum("bcn,kc->bnk", query.flatten(2), negatives.to(query.dtype))


# --------------------------------------------------------------------------- compactness prior


def compact_target(affinity: torch.Tensor, radius: int, peaks: int = 2, fwhm: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The spatial compactness prior Ã (Eq. 7): per query row, a mixture of ``peaks``
    isotropic 2-D Gaussians centred on the top-``peaks`` cells of the row.

    Paper (§3.2, App. A): μ_m = coordinates of the top-M scores of A_i, M = 2; Σ_m and ω_m
    "estimated from A_i" (not specified). Code (models/colorizer_momen.py ``make_gaussian``
    and the compact branch): ω = softmax of the M top affinity values; each Gaussian is
    exp(-4 ln 2 · d² / fwhm²) with d the distance in feature cells and full width at half
    maximum ``fwhm`` = 1 (so 1/16 at one cell), not normalised. The target is computed from
    the detached affinity (no gradient).

    Args:
        affinity: (..., P²) local affinity rows, P = 2R + 1.
        radius: R of the window.
        peaks: M, number of Gaussians (≥ 1).
        fwhm: full width at half maximum of each Gaussian, feature cells (> 0).
    Returns:
        (target, top): target (..., P²), Σ_m ω_m N_m over the window; top (...,) the
        largest affinity value of each row.
    Raises:
        ValueError: the last axis is not P², or peaks/fwhm out of range.
    """
    p = window_size(radius)
    if affinity.shape[-1] != p * p:
        raise ValueError(f"affinity rows have {affinity.shape[-1]} cells, a window of radius {radius} has {p * p}")
    if not 1 <= peaks <= p * p or fwhm <= 0:
        raise ValueError(f"need 1 <= peaks <= {p * p} and fwhm > 0, got peaks={peaks}, fwhm={fwhm}")
    values, index = torch.topk(affinity.detach(), peaks, dim=-1)
    weights = values.softmax(dim=-1)  # (..., M)
    bumps = window_gaussians(index, p, fwhm, affinity.dtype)
    return (weights[..., None] * bumps).sum(dim=-2), values[..., 0]


def window_gaussians(cells: torch.Tensor, p: int, fwhm: float, dtype: torch.dtype) -> torch.Tensor:
    """Unnormalised isotropic Gaussians exp(-4 ln 2 · d² / fwhm²) over a P × P window (d in
    cells), one centred on each window cell of ``cells`` (..., M) (index ky·P + kx) → (..., M, P²)
    (code: models/colorizer_momen.py ``make_gaussian``)."""
    ky = torch.div(cells, p, rounding_mode="floor").to(dtype)
    kx = (cells % p).to(dtype)
    grid = torch.arange(p, device=cells.device, dtype=dtype)
    gy, gx = grid.repeat_interleave(p), grid.repeat(p)  # (P²,) row/column of each cell
    d2 = (gy - ky[..., None]) ** 2 + (gx - kx[..., None]) ** 2  # (..., M, P²)
    return torch.exp(-4.0 * math.log(2.0) * d2 / fwhm**2)


def compactness_loss(
    affinity: torch.Tensor,
    radius: int,
    peaks: int = 2,
    fwhm: float = 1.0,
    gate: float = 0.5,
    kind: str = "smooth_l1",
    scale: float = 20.0,
) -> torch.Tensor:
    """L_com = ‖Ã − A‖ (Eq. 8) on intra-video affinities only.

    Code details (models/colorizer_momen.py): only query rows whose top affinity exceeds
    ``gate`` = 0.5 count (the others are zeroed on both sides but stay in the mean);
    ``kind="smooth_l1"``: mean smooth-L1 of ``scale``·A vs ``scale``·Ã with scale 20;
    ``kind="l2"``: mean squared error (the paper's ‖·‖₂). Gradient flows into A only.

    Args:
        affinity: (B, h·w, P²) intra-video window affinity A (Eq. 1).
    Returns:
        scalar loss.
    Raises:
        ValueError: as :func:`compact_target`, or an unknown ``kind``.
    """
    target, top = compact_target(affinity, radius, peaks, fwhm)
    keep = (top > gate).to(affinity.dtype)[..., None]
    if kind == "smooth_l1":
        return F.smooth_l1_loss(affinity * keep * scale, target * keep * scale)
    if kind == "l2":
        return F.mse_loss(affinity * keep, target * keep)
    raise ValueError(f"compactness loss must be 'smooth_l1' or 'l2', got {kind!r}")


def compact_affinity(affinity: torch.Tensor, radius: int, peaks: int = 2, fwhm: float = 1.0, threshold: float = 0.1) -> torch.Tensor:
    """The affinity used at test time (§3.2: "we replace A with Ã during inference"):
    rows whose top value exceeds ``threshold`` = 0.1 become Ã, the others stay A (code:
    models/colorizer_momen.py, inference branch). (..., P²) → (..., P²).
    Raises ValueError as :func:`compact_target`."""
    target, top = compact_target(affinity, radius, peaks, fwhm)
    return torch.where((top > threshold)[..., None], target, affinity)
