"""STT losses of the temporal step: pyramid reconstruction, local correlation distillation
with entropy-based selection, global correlation distillation.

[P] = Li & Liu, "Spatial-then-Temporal Self-Supervised Learning for Video Correspondence",
CVPR 2023, §3.1-3.2, Eqs. 2-10; [C] = github.com/qianduoduolr/Spa-then-Temp,
vcl/models/trackers/framework.py (``Framework.forward_train``), vcl/models/common/
correlation.py (``non_local_correlation``), configs/train/train.py, where [P] is silent.

Conventions (as hvc.methods.liir.loss, whose window helpers are reused): a local
correlation is (B, h·w, P²), row n = query cell n (row-major), column ky·P + kx = the
reference cell at offset (ky − R, kx − R), P = 2R + 1; cells outside the reference frame
have probability 0. [C] computes the same numbers as a dense (h·w) × (h·w) matrix masked
to the window (``make_mask``); the window form needs P²/(h·w) of its memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hvc.methods.liir.loss import reconstruct, reconstruction_loss, subsample_labels, window_size, window_softmax

__all__ = [
    "entropy",
    "entropy_correlation",
    "entropy_mask",
    "global_correlation",
    "global_distillation_loss",
    "local_correlation",
    "local_distillation_loss",
    "pooled_target",
    "pyramid_reconstruction_loss",
    "reconstruct",
    "window_logits",
]

EPS_LOG = 1e-12
"""Added inside the entropy's log ([C] framework.py ``torch.log(corr + 1e-12)``)."""


def window_index(height: int, width: int, radius: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each cell n of an h × w grid and window cell k = ky·P + kx, the row-major index
    of the reference cell at offset (ky − R, kx − R), clamped into the grid, and whether it
    lies inside: ((h·w, P²) int64, (h·w, P²) bool)."""
    p = window_size(radius)
    y = torch.arange(height, device=device).repeat_interleave(width)[:, None]
    x = torch.arange(width, device=device).repeat(height)[:, None]
    off = torch.arange(p, device=device) - radius
    ry, rx = y + off.repeat_interleave(p)[None], x + off.repeat(p)[None]
    inside = (ry >= 0) & (ry < height) & (rx >= 0) & (rx < width)
    return ry.clamp(0, height - 1) * width + rx.clamp(0, width - 1), inside


def window_logits(target: torch.Tensor, ref: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot products F_t(i)·F_r(j) of every query cell with the reference cells of its
    window of radius R: the same numbers as ``hvc.methods.liir.loss.window_logits``, taken
    from one dense (h·w) × (h·w) product as [C] computes them (``non_local_correlation``)
    rather than from unfolded C × P² windows, which for R = 12 at res3 would hold 9 times
    the dense product's memory.

    Args:
        target, ref: (B, C, h, w) features.
        radius: R, feature cells.
    Returns:
        (logits (B, h·w, P²), 0 outside the frame; valid (h·w, P²) bool).
    Raises:
        ValueError: shapes differ or are not 4-d.
    """
    if target.dim() != 4 or target.shape != ref.shape:
        raise ValueError(f"target and reference features must both be (B, C, h, w) of one shape, got {tuple(target.shape)} and {tuple(ref.shape)}")
    b, _, h, w = target.shape
    dense = torch.einsum("bci,bcj->bij", target.flatten(2), ref.flatten(2))
    index, valid = window_index(h, w, radius, target.device)
    logits = dense.gather(2, index[None].expand(b, -1, -1))
    return logits.masked_fill(~valid, 0.0), valid


def local_correlation(target: torch.Tensor, ref: torch.Tensor, radius: int, temperature: float | None = None) -> torch.Tensor:
    """Local correlation c (Eq. 4): softmax over the window N(i) of radius R of
    F_t(i)·F_r(j)/τ. [P] writes a temperature τ without a value; [C] (``non_local_correlation``
    with ``scaling=True``, temperature 1) divides by √C, the default here (``temperature=None``).

    Args:
        target, ref: (B, C, h, w) features of the target (query) and reference frames.
        radius: R in feature cells ([C] train.py: 12 at res3, 6 at res4).
        temperature: τ, or None for √C.
    Returns:
        (B, h·w, P²) rows summing to 1 over the cells inside the frame.
    Raises:
        ValueError: shapes differ or are not 4-d, or R < 0.
    """
    logits, valid = window_logits(target, ref, radius)
    tau = math.sqrt(target.shape[1]) if temperature is None else temperature
    return window_softmax(logits / tau, valid)


def pyramid_reconstruction_loss(
    corr: torch.Tensor, ref_colour: torch.Tensor, target_colour: torch.Tensor, radius: int, stride: int, scale: float = 20.0
) -> torch.Tensor:
    """One level of L_rec^p (Eq. 7): the reference's dropped Lab channel, sampled every
    ``stride`` pixels ([P] "the same down-sampling method as [MAST]"; [C] ``prep``:
    ``[:, :, ::s, ::s]``), copied through ``corr`` (Eq. 5), upsampled bilinearly to the frame
    and compared with the target's channel by the mean smooth-L1 of ``scale``·x ([C]
    ``compute_lphoto``: scale 20; [P] writes the L1 norm).

    Args:
        corr: (B, h·w, P²) local correlation of this level (:func:`local_correlation`).
        ref_colour, target_colour: (B, 1, H, W) the dropped channel of both frames
            (normalised Lab, before dropout), H = h·stride.
        radius, stride: R and the level's stride.
    Returns:
        scalar loss.
    """
    pred = reconstruct(corr, subsample_labels(ref_colour, stride), radius)
    return reconstruction_loss(pred, target_colour, "smooth_l1", scale)


# --------------------------------------------------------------------------- entropy selection


def entropy_correlation(target: torch.Tensor, ref: torch.Tensor, radius: int) -> torch.Tensor:
    """The correlation [C] takes the entropy of: softmax over the whole (2R+1)² window of
    the raw dot products F_t(i)·F_r(j) (no √C), cells outside the frame taking part with
    dot product 0 ([C] framework.py: ``mmcv.ops.Correlation(max_displacement=R)``, zero
    padded, then ``softmax(1)``). (B, C, h, w) twice → (B, h·w, P²)."""
    logits, _ = window_logits(target, ref, radius)
    return logits.softmax(dim=-1)


def entropy(corr: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """H(i) = Σ_j −log c_ij (Eq. 8, as printed: no factor c_ij; [C] the same, with
    ``log(c + 1e-12)``). (B, N, P²) correlation, optional (N, P²) bool of the cells summed
    (default all) → (B, N)."""
    terms = -torch.log(corr + EPS_LOG)
    if valid is not None:
        terms = terms.masked_fill(~valid, 0.0)
    return terms.sum(dim=-1)


def entropy_mask(ent: torch.Tensor, keep: float = 0.7, mode: str = "official") -> torch.Tensor:
    """m of Eq. 9: 1 for the high-entropy queries distilled, 0 for the others ([P] "filter
    out the region with lower entropy by setting a threshold T", T not given).

    ``mode="official"`` ([C] framework.py, T = 0.7): the (h, w) entropy map is sorted
    along each row (descending), the threshold is row ``int(w·T) − 1`` of the sorted map
    (a (w,) vector), and m[y, x] = H[y, x] > threshold[x]; this keeps about T of the
    queries but not by a single threshold. ``mode="global"``: m = H > the
    ``int(h·w·T)``-th largest entropy of the map (ties aside, the int(h·w·T) − 1 highest).

    Args:
        ent: (B, h, w) entropies.
        keep: T in (0, 1].
    Returns:
        (B, h, w) float mask, no gradient.
    Raises:
        ValueError: unknown mode, or T too small to keep any row/cell.
    """
    b, h, w = ent.shape
    ent = ent.detach()
    if mode == "official":
        k = int(w * keep) - 1
        if k < 0:
            raise ValueError(f"entropy keep-ratio {keep} selects nothing in a row of {w} cells")
        threshold = ent.sort(dim=-1, descending=True).values[:, k : k + 1]  # (B, 1, w): row k of the sorted map
        return (ent > threshold).to(ent.dtype)
    if mode == "global":
        k = int(h * w * keep) - 1
        if k < 0:
            raise ValueError(f"entropy keep-ratio {keep} selects nothing in a map of {h * w} cells")
        flat = ent.flatten(1)
        threshold = flat.sort(dim=1, descending=True).values[:, k : k + 1]
        return (flat > threshold).to(ent.dtype).view(b, h, w)
    raise ValueError(f"entropy mask mode must be 'official' or 'global', got {mode!r}")


# --------------------------------------------------------------------------- local distillation


def pooled_target(corr0: torch.Tensor, size0: tuple[int, int], radius0: int, radius1: int, mode: str = "mean") -> torch.Tensor:
    """The pseudo label c^t of L_lc ([P] §3.2 "correlation down-sampling"): the finer
    level's correlation pooled 2×2 over query cells and over reference cells, detached.

    c^t(I, J) = 1/16 Σ_{i ∈ I} Σ_{j ∈ J} c⁰(i, j) with I, J the 2×2 blocks of the finer
    grid under coarse cells I, J (``mode="mean"``, [C] framework.py: ``avg_pool2d(·, 2)``
    over reference then query cells: rows sum to 1/4); ``mode="sum"``: 1/4 Σ_i Σ_j (mean over
    the query block, sum over the reference block: rows sum to 1).

    Only the coarse window of radius R¹ is returned; [C]'s dense target is 0 outside it
    whenever R⁰ ≤ 2R¹ + 1 (default 12 ≤ 13), so the two then agree exactly.

    Args:
        corr0: (B, h0·w0, P0²) finer-level local correlation (radius R⁰).
        size0: (h0, w0), both even.
        radius0, radius1: R⁰ and R¹.
    Returns:
        (B, (h0/2)·(w0/2), P1²) target, detached.
    Raises:
        ValueError: shapes that do not fit, odd sizes, or an unknown mode.
    """
    h0, w0 = size0
    p0, p1 = window_size(radius0), window_size(radius1)
    if corr0.dim() != 3 or corr0.shape[1:] != (h0 * w0, p0 * p0) or h0 % 2 or w0 % 2:
        raise ValueError(f"finer correlation {tuple(corr0.shape)} does not fit an even {h0} x {w0} grid with radius {radius0}")
    if mode not in ("mean", "sum"):
        raise ValueError(f"pooling mode must be 'mean' or 'sum', got {mode!r}")
    pad = max(0, 2 * radius1 + 1 - radius0)
    grid = F.pad(corr0.detach().view(-1, h0, w0, p0, p0), (pad, pad, pad, pad))
    span = 2 * (p1 - 1) + 1
    out = corr0.new_zeros(corr0.shape[0], h0 // 2, w0 // 2, p1, p1)
    for a in (0, 1):  # query cell inside its 2x2 block (row, column)
        for b in (0, 1):
            sub = grid[:, a::2, b::2]
            for c in (0, 1):  # reference cell inside its 2x2 block
                for d in (0, 1):
                    y0, x0 = radius0 - 2 * radius1 + c - a + pad, radius0 - 2 * radius1 + d - b + pad
                    out += sub[..., y0 : y0 + span : 2, x0 : x0 + span : 2]
    out = out / (16.0 if mode == "mean" else 4.0)
    return out.view(corr0.shape[0], -1, p1 * p1)


def local_distillation_loss(corr1: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, ref_cells: int) -> torch.Tensor:
    """L_lc^e (Eq. 9) as [C] reduces it (``MSELoss`` with an element-wise weight: the sum of
    m_i (c¹_ij − c^t_ij)² over kept rows i and every reference cell j, divided by the
    number of weighted elements + 1e-12): Σ_i m_i ‖c¹_i − c^t_i‖² / (Σ_i m_i · h¹w¹).

    Args:
        corr1: (B, N, P1²) coarse local correlation c^{N−1} (gradient flows here).
        target: (B, N, P1²) detached :func:`pooled_target`.
        mask: (B, N) entropy mask m.
        ref_cells: h¹·w¹, the reference cells of [C]'s dense rows (cells outside the window
            add 0 to the sum).
    Returns:
        scalar (0 when nothing is kept).
    """
    if corr1.shape != target.shape or mask.shape != corr1.shape[:2]:
        raise ValueError(f"correlation {tuple(corr1.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)} do not fit")
    err = ((corr1 - target) ** 2).sum(dim=-1)
    return (err * mask).sum() / (mask.sum() * ref_cells + 1e-12)


# --------------------------------------------------------------------------- global distillation


def global_correlation(
    target: torch.Tensor, ref: torch.Tensor, temperature: float | None = None, normalize: bool = False
) -> torch.Tensor:
    """Global correlation a (Eq. 2): softmax over every reference cell of F_t(i)·F_r(j)/τ.

    Student: ``temperature=None`` divides by √C ([C] ``non_local_correlation(scaling=True)``);
    teacher: τ = 0.07 on the raw (``normalize=False``) res5 features ([C] framework.py
    ``temperature_t=0.07``, ``norm=False``).

    Args:
        target, ref: (B, C, h, w) res5 features (stride 32).
    Returns:
        (B, h·w, h·w), rows sum to 1.
    """
    if target.dim() != 4 or target.shape != ref.shape:
        raise ValueError(f"global correlation needs two (B, C, h, w) maps of one shape, got {tuple(target.shape)}, {tuple(ref.shape)}")
    q, k = target.flatten(2), ref.flatten(2)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    tau = math.sqrt(target.shape[1]) if temperature is None else temperature
    return (torch.einsum("bci,bcj->bij", q, k) / tau).softmax(dim=-1)


def global_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L_gc = ‖a − a^t‖² (Eq. 3), the mean over all elements ([C] ``MSELoss(reduction='mean')``);
    the teacher's correlation is detached. (B, N, N) twice → scalar."""
    return F.mse_loss(student, teacher.detach())
