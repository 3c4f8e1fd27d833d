"""Mask-VOS losses, in the paper's order ([P] Li et al., CVPR 2023, §3.1-3.3, Eqs. 5-16;
the clustering of Eq. 4 is :mod:`hvc.methods.maskvos.clustering`).

Mask-embedded segmentation (§3.1 Step 2), for a query I_q and references I_r1..I_rN:

* Eq. 5:  I_rn = E(I_rn), V_rn = V([I_rn, Y_rn])
* Eq. 6:  A = softmax(I_r I_qᵀ / τ) ∈ R^{NHW × HW}, softmax over the N·HW reference cells
* Eq. 7:  V_q = Aᵀ V_r
* Eq. 8:  Ȳ_q = Aᵀ [Y_r1 .. Y_rN]
* Eq. 9:  Ŷ_q = D([V_q, V̄_q]), V̄_q = V([I_q, Ȳ_q])
* Eq. 10: L_Seg = CE(Ŷ_q, Y_q)

Correspondence (§3.2), Φ a random scaling/flipping/cropping:

* Eqs. 11-12: L_Short = −Σ_k log softmax_l(⟨x_{t+1}^k, x'_t^l⟩)_k, x' = E(Φ(I_t)), x = Φ(E(I_{t+1}))
* Eqs. 13-15: o_k = argmax_o ⟨x'_{t'}^k, i_t^o⟩ (x' = E(Φ(I_{t'})), i = E(I_t)), then
  L_Long = −Σ_k log softmax_l(⟨x_{t'}^k, i_t^l⟩)_{o_k}, x = Φ(E(I_{t'})), |t − t'| ≥ 5
* Eq. 16: L = L_Seg + λ1 L_Short + λ2 L_Long, λ1 = 0.1, λ2 = 0.5

⟨·,·⟩ is the cosine similarity divided by a temperature τ (the paper prints none; the code,
github.com/0liliulei/Mask-VOS models/framework_mask.py, uses 0.05). Sums over pixels and
clips are taken as means (a constant factor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hvc.methods.maskvos.model import soft_aggregate

# ------------------------------------------------------------------ Φ: scale, flip, crop


def random_transform(batch: int, scale: tuple[float, float], generator: torch.Generator | None = None) -> torch.Tensor:
    """Random geometric transformations Φ (§3.2: scaling, flipping, cropping) as affine
    matrices (B, 2, 3) for :func:`apply_transform`: a square crop of side fraction
    s ~ U(scale) at a uniform position inside the frame, horizontally flipped with
    probability 1/2, resized back to the full size.

    Raises:
        ValueError: a scale outside (0, 1] or low > high.
    """
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"transform scale must satisfy 0 < low <= high <= 1, got {scale}")
    u = torch.rand(batch, 4, generator=generator)
    s = lo + (hi - lo) * u[:, 0]
    tx, ty = (1 - s) * (2 * u[:, 1] - 1), (1 - s) * (2 * u[:, 2] - 1)
    sign = torch.where(u[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = s * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = s, ty
    return theta


def apply_transform(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Φ applied to images or feature maps: (B, C, H, W) → (B, C, H, W), bilinear
    resampling of the crop ``theta`` (B, 2, 3) (normalised coordinates, so the same Φ acts
    on a frame and on its stride-8 features: E(Φ(I)) and Φ(E(I)) of Eq. 11 align)."""
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ------------------------------------------------------------------ Eqs. 11-15


def cosine_logits(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """⟨q^k, k^l⟩: cosine similarities / τ of every query cell with every key cell.

    Args:
        query, keys: (B, D, h, w) feature maps (normalised here).
    Returns:
        (B, hw, hw) logits, rows = query cells.
    """
    q = F.normalize(query.flatten(2), dim=1)
    k = F.normalize(keys.flatten(2), dim=1)
    return torch.bmm(q.transpose(1, 2), k) / temperature


def short_term_loss(x_prime_t: torch.Tensor, x_next: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_Short (Eq. 12): each cell k of X_{t+1} = Φ(E(I_{t+1})) must pick cell k of
    X'_t = E(Φ(I_t)) among all cells l of X'_t.

    Args:
        x_prime_t: (B, D, h, w) E(Φ(I_t)).
        x_next: (B, D, h, w) Φ(E(I_{t+1})).
    Returns:
        scalar, mean over cells and clips of −log softmax_l(⟨x_{t+1}^k, x'_t^l⟩)_k.
    """
    logits = cosine_logits(x_next, x_prime_t, temperature)
    b, n, _ = logits.shape
    target = torch.arange(n, device=logits.device).expand(b, n)
    return F.cross_entropy(logits.reshape(b * n, n), target.reshape(-1))


def long_term_targets(x_prime: torch.Tensor, i_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """o_k of Eq. 14: for each cell k of X'_{t'} = E(Φ(I_{t'})), the most similar cell of
    I_t = E(I_t) (argmax of a_{k,o}; no gradient). (B, D, h, w) x 2 → (B, hw) int64."""
    with torch.no_grad():
        return cosine_logits(x_prime, i_t, temperature).argmax(-1)


def long_term_loss(x_prime: torch.Tensor, x: torch.Tensor, i_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_Long (Eq. 15): each cell k of X_{t'} = Φ(E(I_{t'})) must pick the cell o_k of I_t
    (Eq. 14, found with X'_{t'} = E(Φ(I_{t'}))) among all cells of I_t.

    Args:
        x_prime: (B, D, h, w) E(Φ(I_{t'})); x: (B, D, h, w) Φ(E(I_{t'})); i_t: (B, D, h, w) E(I_t).
    Returns:
        scalar, mean over cells and clips.
    """
    target = long_term_targets(x_prime, i_t, temperature)
    logits = cosine_logits(x, i_t, temperature)
    b, n, m = logits.shape
    return F.cross_entropy(logits.reshape(b * n, m), target.reshape(-1))


# ------------------------------------------------------------------ the code's DUL losses


def grid_index(batch: int, height: int, width: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flat cell indices (B, n·n) of an n x n grid of anchors per clip, spaced (h // n,
    w // n), shifted by one random offset per clip (DUL's ``_sample_index``, [C]
    models/framework.py). Raises ValueError when the grid does not fit the map."""
    xs, ys = width // n, height // n
    if xs < 1 or ys < 1 or width % n or height % n:
        raise ValueError(f"a {n}x{n} anchor grid needs a map whose sides are multiples of {n}, got {height}x{width}")
    x = torch.arange(0, width, xs).view(1, 1, n) + torch.randint(0, xs, (batch, 1, 1), generator=generator)
    y = torch.arange(0, height, ys).view(1, n, 1) + torch.randint(0, ys, (batch, 1, 1), generator=generator)
    return (x + y * width).reshape(batch, n * n)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) features at (B, P) flat cells → (B·P, K)."""
    b, k = x.shape[:2]
    return x.flatten(2).gather(2, index.to(x.device)[:, None].expand(-1, k, -1)).transpose(1, 2).reshape(-1, k)


def dul_cross_view_loss(x1: torch.Tensor, x2: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
    """The code's "cross_key" term ([C] models/framework.py ``_ref_loss``): frame 0 of two
    augmented views, aligned to each other, (B, K, h, w) each; at the (B, P) grid cells
    ``index`` each point of view 1 must pick its own point of view 2 among all B·P points
    (raw dot products of the unit keys / τ, InfoNCE)."""
    a, b = _gather(x1, index), _gather(x2, index)
    logits = a @ b.t() / temperature
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def dul_temporal_loss(k1: torch.Tensor, k2: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
    """The code's "temp" term ([C] models/framework.py ``_cluster_grid``, ``_pseudo_mask``,
    ``_ce_loss``): anchors = view 1's frame-0 keys at the (B, P) cells ``index``; every cell
    of view 1's frames 1..T−1 is classified among all B·P anchors (dot / τ), the target
    being the anchor of its own clip that view 2's key of that cell matches best (no
    gradient through the target).

    Args:
        k1, k2: (B, T, K, h, w) keys of the two views, aligned to the same geometry.
    Returns:
        scalar, mean over the cells of frames 1..T−1.
    """
    b, t, k, h, w = k1.shape
    anchors = _gather(k1[:, 0], index)  # (B·P, K)
    p = index.shape[1]
    logits = torch.einsum("btkx,ak->btax", k1.flatten(3), anchors) / temperature  # (B, T, B·P, hw)
    with torch.no_grad():
        target = torch.einsum("btkx,ak->btax", k2.flatten(3), anchors) / temperature
        own = torch.eye(b, device=k1.device).repeat_interleave(p, dim=1)[:, None, :, None]  # (B, 1, B·P, 1)
        target = (target.softmax(dim=2) * own).argmax(dim=2)  # (B, T, hw)
    return F.cross_entropy(logits[:, 1:].flatten(0, 1), target[:, 1:].flatten(0, 1))


# ------------------------------------------------------------------ Eqs. 5-10


def reference_affinity(ref_keys: torch.Tensor, query_key: torch.Tensor, temperature: float) -> torch.Tensor:
    """A of Eq. 6: softmax over the N·h·w reference cells of I_r I_qᵀ / τ.

    Args:
        ref_keys: (B, N, D, h, w) keys of the N references; query_key: (B, D, h, w).
    Returns:
        (B, N·h·w, h·w); every column sums to 1.
    """
    b, n, d, h, w = ref_keys.shape
    keys = ref_keys.permute(0, 2, 1, 3, 4).reshape(b, d, n * h * w)
    logits = torch.bmm(keys.transpose(1, 2), query_key.reshape(b, d, -1)) / temperature
    return logits.softmax(dim=1)


def readout(affinity: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Aᵀ X_r: Eq. 7 (X = V, values) and Eq. 8 (X = Y, masks).

    Args:
        affinity: (B, N·h·w, h'·w') from :func:`reference_affinity`.
        ref: (B, N, C, h, w) reference values or soft masks.
    Returns:
        (B, C, h'·w') readout for the query cells.
    """
    b, n, c, h, w = ref.shape
    return torch.bmm(ref.permute(0, 2, 1, 3, 4).reshape(b, c, n * h * w), affinity)


def decode_objects(
    value_encoder,
    decoder,
    query_frame: torch.Tensor,
    query_feats: dict[str, torch.Tensor],
    query_values: torch.Tensor,
    coarse: torch.Tensor,
) -> torch.Tensor:
    """Eq. 9 for K objects: Ŷ_q = D([V_q, V̄_q]), V̄_q = V([I_q, Ȳ_q]), then soft aggregation.

    Args:
        value_encoder, decoder: V and D (:mod:`hvc.methods.maskvos.model`).
        query_frame: (B, 3, H, W) normalised I_q.
        query_feats: E's features of I_q (``res4``, ``skip8``, ``skip4``).
        query_values: (B, K, D', h, w) V_q of each object (Eq. 7).
        coarse: (B, K, H, W) Ȳ_q of each object in [0, 1] (Eq. 8, or the previous round's Ŷ_q).
    Returns:
        (B, K + 1, H, W) logits, background first (softmax gives Ŷ_q).
    """
    b, k = coarse.shape[:2]

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(k, dim=0)

    v_bar = value_encoder(rep(query_frame), coarse.reshape(b * k, 1, *coarse.shape[-2:]), rep(query_feats["res4"]))
    x = torch.cat([query_values.flatten(0, 1), v_bar], dim=1)
    logits = decoder(x, rep(query_feats["skip8"]), rep(query_feats["skip4"]))
    return soft_aggregate(torch.sigmoid(logits).reshape(b, k, *logits.shape[-2:]), dim=1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Seg (Eq. 10): cross-entropy of (B, K + 1, H, W) logits against (B, H, W) int64
    pseudo labels (0 = background), mean over pixels."""
    return F.cross_entropy(logits, target)


def total_loss(seg: torch.Tensor | None, short: torch.Tensor, long: torch.Tensor, lambda_short: float, lambda_long: float) -> torch.Tensor:
    """Eq. 16: L = L_Seg + λ1 L_Short + λ2 L_Long (λ1 = 0.1, λ2 = 0.5); ``seg=None`` gives
    L_Corr alone (the warm-up of §3.3)."""
    corr = lambda_short * short + lambda_long * long
    return corr if seg is None else seg + corr
