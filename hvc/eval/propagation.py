"""Label propagation with a frozen encoder (paper §4.1; the CRW protocol; official HVC
code: ``infer_vos.py`` and ``labelprop/``).

In the order it runs: read frames → extract L2-normalised features → for each frame,
match every query cell against the context (the reference frame, attended globally, and
the previous ``context`` frames, each attended only within ``radius`` feature cells) →
keep the top-k affinities, softmax them with a temperature, and take the weighted sum of
the context's soft labels → upsample and argmax → write palette PNGs.

The radius-limited part is computed only inside each query's disk (:class:`_Strips`:
strips of queries along a row against the few keys of each row that their disks reach,
batched matrix products on strided views, no window gathered) and only the best few key
positions of each query are read back. :func:`predict_dense` is the reference dense
computation (affinity against every context cell, masked afterwards, as the CRW/HVC code
computes it). Both paths choose the k winners on affinities recomputed by one shared
function, ties broken by candidate index, and read them out the same way
(:func:`_select_and_read`), so they give bit-identical soft labels and masks (except
where more than ``_FINALISTS * k`` candidates tie within float32 rounding, e.g. identical
features of a flat region: there each keeps its own approximation's best).

Objects that first appear after frame 0 (YouTube-VOS) follow the official code: every
frame where objects appear starts its own propagation branch (that frame as the globally
attended reference, the previous frames since it as local context), and the branches'
predictions are summed, each over the object channels it owns.

:func:`propagate_soft` is the frame loop on soft labels at feature resolution, shared by
segmentation (:func:`propagate_video` upsamples and argmaxes each frame) and pose
tracking (:mod:`hvc.eval.pose` reads joints out of propagated heatmaps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hvc.methods.base import NORMALIZATION

NEG = float("-inf")


@dataclass(frozen=True)
class PropagationConfig:
    """Propagation hyper-parameters (defaults: the official HVC code; CRW: topk 10, context 20, T 0.05).

    ``tile`` (queries per strip along a row) and ``query_chunk`` (query cells per chunk,
    bounds memory) only trade speed for memory: the result does not depend on them.
    """

    temperature: float = 0.1
    topk: int = 15
    context: int = 50
    radius: int = 12
    tile: int = 8
    query_chunk: int = 4096


# --------------------------------------------------------------------------- features


def preprocess(frame: np.ndarray, resolution: int | None, normalization: str = "imagenet") -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, h, w) float normalised, short side resized to ``resolution``."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
    if resolution is not None:
        H, W = x.shape[-2:]
        s = resolution / min(H, W)
        x = F.interpolate(x, (round(H * s), round(W * s)), mode="bilinear", align_corners=False, antialias=True)
    mean, std = NORMALIZATION[normalization]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def labels_to_onehot(labels: np.ndarray, num_objects: int) -> torch.Tensor:
    """(H, W) label map → (K+1, H, W) float one-hot (channel 0 background)."""
    lab = torch.from_numpy(labels.astype(np.int64))
    return F.one_hot(lab.clamp_max(num_objects), num_objects + 1).permute(2, 0, 1).float()


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of soft labels (K+1, H, W) → (K+1, h, w) (official: align_corners=True)."""
    return F.interpolate(labels[None], size, mode="bilinear", align_corners=True)[0]


# --------------------------------------------------------------------------- top-k matching
#
# Both paths end in :func:`_select_and_read`. Each passes, per query, a superset of the
# candidates that can be among its k best, with their affinities from its own float32
# matrix products (whose rounding depends on the product's shape, blocking and threads) and
# a bound on the affinity of every candidate it left out. The k winners are chosen on
# affinities recomputed by one shared function (:func:`_exact_affinity`: a (query, key) pair
# gets the same float32 value wherever it is computed), ties broken by candidate id, and
# read out elementwise, so both paths give bit-identical soft labels.

# Candidates passed on, for near-ties at the k-th: key positions and reference-frame cells
# beyond the k best, and finalists per query (times k: a wider tie group is left to each
# path's own approximation, see _select_and_read).
_SPARE = 2
_REF_SPARE = 16
_FINALISTS = 6


def _unit_roundoff() -> float:
    """Unit roundoff of float32 matrix products under torch's matmul precision setting
    (``highest``: float32, ``high``: TF32, ``medium``: bfloat16)."""
    return {"highest": 2.0**-24, "high": 2.0**-11}.get(torch.get_float32_matmul_precision(), 2.0**-8)


def _margin(q: torch.Tensor, key_norm: float) -> torch.Tensor:
    """(Q, C) queries → (Q,) twice the largest difference between a float32 matrix
    product's affinity of a query with a key of norm <= ``key_norm`` (any summation order:
    within γ_C |q| |k| of the exact value, γ_n = nu / (1 - nu)) and :func:`_exact_affinity`'s
    (pairwise: within γ_(log2 C + 1) |q| |k|) (Higham, Accuracy and Stability of Numerical
    Algorithms, 2002, §3.1 and §4.2); 1 % slack for the norms' own rounding."""
    C = q.shape[1]

    def gamma(n: int, u: float) -> float:
        return n * u / (1 - n * u)

    bound = gamma(C, _unit_roundoff()) + gamma((C - 1).bit_length() + 1, 2.0**-24)
    return 2 * bound * 1.01 * q.norm(dim=1) * key_norm


def _exact_affinity(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(P, C) queries · (P, C) keys → (P,) dot products, summed pairwise in a fixed order
    by elementwise float32 additions only, so that a pair's value does not depend on what
    else is computed with it (a matrix product's does)."""
    p = q * keys
    if p.shape[1] & (p.shape[1] - 1):  # not a power of two: zeros added exactly
        p = F.pad(p, (0, (1 << (p.shape[1] - 1).bit_length()) - p.shape[1]))
    while p.shape[1] > 1:
        half = p.shape[1] // 2
        p = p[:, :half] + p[:, half:]
    return p[:, 0]


def _best(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q, N) → the k largest per row (values, indices: (Q, min(k, N))) and (Q,) the largest
    value left out (-inf when none is)."""
    v, i = x.topk(min(k + 1, x.shape[1]), dim=1)
    if v.shape[1] <= k:
        return v, i, v.new_full(v.shape[:1], NEG)
    return v[:, :k], i[:, :k], v[:, k]


@dataclass
class _Context:
    """The candidates of one target frame, by id: the reference frame's cells (ids 0..n0-1,
    each counted once), then each previous frame's cells (counted with the frame's
    multiplicity). ``feats``: (C, n_i) features per frame; ``rows``: per frame, channels-last
    keys (R_i, C) and the row of each cell in them ((n_i,), or None: row = cell);
    ``offsets``: (F + 1,) first id of each frame and the total; ``labels``: (N, L) soft
    labels; ``counts``: (N,) multiplicity; ``key_norm``: the largest key norm."""

    feats: list[torch.Tensor]
    rows: list[tuple[torch.Tensor, torch.Tensor | None]]
    offsets: torch.Tensor
    labels: torch.Tensor
    counts: torch.Tensor
    key_norm: float

    @classmethod
    def build(
        cls,
        first: tuple[torch.Tensor, torch.Tensor],
        previous: list[tuple[torch.Tensor, torch.Tensor, int]],
        norms: list[float] | None = None,
        rows: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    ) -> _Context:
        """From ``first`` and ``previous`` as :func:`predict_windowed` takes them; ``norms``:
        each previous frame's largest key norm, ``rows``: its channels-last keys (as
        ``_Context.rows``), if at hand (else a transposed view is gathered from)."""
        f0, l0 = first
        C = f0.shape[0]
        feats = [f0.reshape(C, -1)] + [f.reshape(C, -1) for f, _, _ in previous]
        labels = torch.cat([lab.reshape(lab.shape[0], -1).T for lab in [l0] + [lab for _, lab, _ in previous]])
        sizes = torch.tensor([f.shape[1] for f in feats], device=f0.device)
        mult = torch.tensor([1] + [m for _, _, m in previous], device=f0.device)
        offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        if norms is None:
            norms = [_key_norm(f) for f in feats[1:]]
        if rows is None:
            rows = [(f.T, None) for f in feats[1:]]
        rows = [(feats[0].T.contiguous(), None)] + list(rows)
        return cls(feats, rows, offsets, labels, mult.repeat_interleave(sizes), max([_key_norm(feats[0])] + norms))

    def affinity(self, q: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """:func:`_exact_affinity` of queries ``q[rows]`` ((Q, C) features, (P,) rows) with
        the (P,) candidates ``ids`` → (P,), one frame at a time (keys gathered channels-last)."""
        frame = torch.searchsorted(self.offsets, ids, right=True) - 1
        out = q.new_empty(ids.shape[0])
        for j in frame.unique().tolist():
            table, where = self.rows[j]
            for sel in (frame == j).nonzero()[:, 0].split(1 << 16):  # bounded memory
                cells = ids[sel] - self.offsets[j]
                out[sel] = _exact_affinity(q[rows[sel]], table[cells if where is None else where[cells]])
        return out


def _key_norm(f: torch.Tensor) -> float:
    """Largest L2 norm over the cells of (C, ...) features."""
    return f.reshape(f.shape[0], -1).norm(dim=0).max().item()


def _readout(vals: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """(Q, k) affinities sorted in descending order and their (Q, k, L) labels → (Q, L):
    softmax of affinity / temperature, weighted sum of the labels (official: CRW
    ``mem_efficient_batched_affinity`` and ``CRW.forward`` in HVC ``labelprop/crw.py``),
    summed elementwise over k in order so that a row's result does not depend on the rows
    computed with it. A query with no finite candidate gets no label mass."""
    e = torch.nan_to_num(torch.exp(vals / temperature - vals[:, :1] / temperature), nan=0.0)
    total = e[:, 0]
    for i in range(1, e.shape[1]):
        total = total + e[:, i]
    w = torch.nan_to_num(e / total[:, None], nan=0.0)
    out = w[:, 0, None] * labels[:, 0]
    for i in range(1, e.shape[1]):
        out = out + w[:, i, None] * labels[:, i]
    return out


def _select_and_read(
    q: torch.Tensor,
    approx: torch.Tensor,
    ids: torch.Tensor,
    ctx: _Context,
    cfg: PropagationConfig,
    excluded: torch.Tensor,
    m: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k readout of a set of queries from candidate supersets; the result of a row that
    is done does not depend on the superset nor on how its affinities were approximated.

    The k-th best approximate affinity (candidates counted with their multiplicity) less
    :func:`_margin` is a threshold that every one of the k best candidates by exact value
    passes. The best ``m`` passed candidates above it get :func:`_exact_affinity`; the k
    best by it (ties: smaller id first, copies of a candidate side by side) are read out.

    Args:
        q: (Q, C) query features.
        approx: (Q, N) approximate affinities of the passed candidates (-inf: none).
        ids: (Q, N) their ids in ``ctx``, distinct within a row where ``approx`` is finite.
        ctx: the target frame's candidates.
        cfg: top-k and temperature.
        excluded: (Q,) largest approximate affinity of a candidate not passed (-inf: none).
        m: how many passed candidates are considered at most.
    Returns:
        (Q, L) soft labels; (Q,) bool ``done``: the row is right (no candidate left out,
        here or by the caller, can reach the threshold); (Q,) bool ``crowded``: not done
        because more than ``m`` passed candidates lie within the margin (a tie group, e.g.
        identical features in a flat region); the row then reads out the k best by the
        caller's approximation, which may differ between paths.
    """
    k = cfg.topk
    a, j, excluded_here = _best(approx, m)
    ids = ids.gather(1, j)
    counts = ctx.counts[ids] * (a > NEG)
    reach = counts.cumsum(1) >= k
    kth = a.gather(1, reach.int().argmax(1, keepdim=True))[:, 0].masked_fill(~reach.any(1), NEG)
    threshold = kth - _margin(q, ctx.key_norm)
    left_out = torch.maximum(excluded, excluded_here)
    done = (left_out < threshold) | (left_out == NEG)
    crowded = ~done & (excluded_here >= threshold)
    keep = (a >= threshold[:, None]) & (counts > 0) & ~crowded[:, None]
    exact = torch.where(crowded[:, None], a, NEG)  # a crowded row: its own approximation
    rows, cols = keep.nonzero(as_tuple=True)
    exact[rows, cols] = ctx.affinity(q, rows, ids[rows, cols])
    counts = counts * (keep | crowded[:, None])
    by_id = ids.argsort(1)
    exact, ids, counts = exact.gather(1, by_id), ids.gather(1, by_id), counts.gather(1, by_id)
    order = exact.sort(dim=1, descending=True, stable=True).indices
    exact, ids, counts = exact.gather(1, order), ids.gather(1, order), counts.gather(1, order)
    # slot s of the k holds the candidate whose copies cover it
    slots = torch.arange(k, device=a.device).expand(a.shape[0], k).contiguous()
    pick = torch.searchsorted(counts.cumsum(1), slots, right=True)
    filled = pick < a.shape[1]
    pick = pick.clamp_max(a.shape[1] - 1)
    vals = exact.gather(1, pick).masked_fill(~filled, NEG)
    return _readout(vals, ctx.labels[ids.gather(1, pick)], cfg.temperature), done, crowded


def _dense_rows(q: torch.Tensor, cells: torch.Tensor, ctx: _Context, cfg: PropagationConfig, h: int, w: int) -> torch.Tensor:
    """(Q, L) soft labels of query cells ``cells`` (Q,) (index in the h*w frame) with
    features ``q`` (Q, C), from their affinities with every candidate, the previous frames'
    masked to the cells strictly inside ``cfg.radius`` (0: none masked) afterwards (and
    :func:`_settle`)."""
    approx = torch.cat([q @ f for f in ctx.feats], 1)
    if cfg.radius > 0 and len(ctx.feats) > 1:
        yy, xx = torch.arange(h * w, device=q.device) // w, torch.arange(h * w, device=q.device) % w
        y, x = cells // w, cells % w
        far = (y[:, None] - yy) ** 2 + (x[:, None] - xx) ** 2 >= cfg.radius**2  # integer cells: exact
        n0 = ctx.feats[0].shape[1]
        approx[:, n0:].view(q.shape[0], -1, h * w).masked_fill_(far[:, None], NEG)
    ids = torch.arange(approx.shape[1], device=q.device).expand_as(approx)
    return _settle(q, approx, ids, approx.new_full(q.shape[:1], NEG), ctx, cfg)[0]


def _settle(
    q: torch.Tensor, approx: torch.Tensor, ids: torch.Tensor, excluded: torch.Tensor, ctx: _Context, cfg: PropagationConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_select_and_read` with ``_FINALISTS * k`` finalists; a crowded row keeps its
    result (a tie group wider than the finalists).

    Returns:
        (Q, L) soft labels and (Q,) bool: rows that need candidates the caller left out.
    """
    out, done, crowded = _select_and_read(q, approx, ids, ctx, cfg, excluded, _FINALISTS * cfg.topk)
    return out, ~done & ~crowded


def _finish(
    q: torch.Tensor, out: torch.Tensor, unsettled: torch.Tensor, ctx: _Context, cfg: PropagationConfig, h: int, w: int
) -> torch.Tensor:
    """``out`` (h*w, L) with its ``unsettled`` (h*w,) rows (those that need a candidate the
    windowed computation left out) computed densely (:func:`_dense_rows`; ``q``: (h*w, C))."""
    redo = unsettled.nonzero()[:, 0]
    for a in range(0, len(redo), cfg.query_chunk):
        cells = redo[a : a + cfg.query_chunk]
        out[cells] = _dense_rows(q[cells], cells, ctx, cfg, h, w)
    return out


class _Strips:
    """Where each query's disk of keys lies, for one feature-map size and radius.

    Queries are cut into strips of ``width`` cells along a row. For a row offset dy
    (|dy| < R) the keys of a query at column x lie in columns x - e .. x + e of row
    y + dy, e = floor(sqrt(R² - dy² - 1)) (the cells strictly inside the radius, as the
    CRW/HVC mask); a strip of queries therefore needs ``width + 2e`` consecutive keys
    of that row. Features are stored channels-last in a zero-padded flat buffer whose
    rows are ``stride`` cells apart (``stride`` >= w + R - 1, a multiple of ``width``), so
    for every dy the strips of all rows are one batched matrix product on strided views
    of the buffers (no key is copied). ``mask`` (0 inside the disk and the image, -inf
    elsewhere) and ``key_index`` (the key's index in the unpadded h*w frame) have one
    row per padded query cell (h * stride) and one column per computed key.
    """

    def __init__(self, h: int, w: int, radius: int, width: int, device: torch.device) -> None:
        self.h, self.w, self.width, self.radius = h, w, width, radius
        reach = radius - 1  # largest |dy| (and |dx|) strictly inside the radius
        self.dys = list(range(-reach, reach + 1))
        self.half = [math.isqrt(radius * radius - dy * dy - 1) for dy in self.dys]
        self.stride = math.ceil((w + reach) / width) * width
        self.segments = self.stride // width
        self.top = reach + 1  # zero rows above and below: strided views never leave the buffer
        self.rows = h + 2 * self.top
        self.ncols = sum(width + 2 * e for e in self.half)
        y = torch.arange(h, device=device).view(h, 1, 1)
        x = torch.arange(self.stride, device=device).view(1, -1, 1)
        masks, index = [], []
        for dy, e in zip(self.dys, self.half):
            c = torch.arange(width + 2 * e, device=device).view(1, 1, -1)
            kx = (x // width) * width - e + c
            ky = y + dy
            ok = (kx >= 0) & (kx < w) & (ky >= 0) & (ky < h) & ((kx - x).abs() <= e) & (x < w)
            masks.append(ok.expand(h, -1, -1))
            index.append((ky * w + kx).clamp(0, h * w - 1).expand(h, -1, -1))
        ok = torch.cat(masks, 2).reshape(h * self.stride, self.ncols)
        self.mask = torch.zeros(ok.shape, device=device).masked_fill_(~ok, NEG)
        self.key_index = torch.cat(index, 2).reshape(h * self.stride, self.ncols)
        cells = torch.arange(h * w, device=device)
        self.cell_rows = (self.top + cells // w) * self.stride + cells % w  # (h*w,) a cell's row in keys()
        self._positions: dict[int, torch.Tensor] = {}

    def keys(self, f: torch.Tensor) -> torch.Tensor:
        """(C, h, w) features → (rows * stride, C) zero-padded channels-last buffer."""
        C = f.shape[0]
        buf = f.new_zeros(self.rows, self.stride, C)
        buf[self.top : self.top + self.h, : self.w] = f.permute(1, 2, 0)
        return buf.reshape(-1, C)

    def queries(self, q: torch.Tensor) -> torch.Tensor:
        """(C, h, w) features → (h * segments, width, C) strips (columns >= w are zero)."""
        C = q.shape[0]
        buf = q.new_zeros(self.h, self.stride, C)
        buf[:, : self.w] = q.permute(1, 2, 0)
        return buf.reshape(-1, self.width, C)

    def positions(self, rows: int) -> torch.Tensor:
        """(rows * stride, ncols) index of each query's computed keys in the flat output of
        :meth:`affinity` for ``rows`` rows (one block per dy, each (queries, width + 2e))."""
        if rows not in self._positions:
            n, dev = rows * self.stride, self.mask.device
            q = torch.arange(n, device=dev).view(-1, 1)
            blocks, start = [], 0
            for e in self.half:
                m = self.width + 2 * e
                blocks.append(start + q * m + torch.arange(m, device=dev).view(1, -1))
                start += n * m
            self._positions[rows] = torch.cat(blocks, 1)
        return self._positions[rows]

    def affinity(self, q: torch.Tensor, keys: torch.Tensor, y0: int, y1: int, out: torch.Tensor) -> None:
        """Affinities of the strips of rows y0..y1-1 with one frame's keys, written into the
        flat ``out`` ((y1 - y0) * stride * ncols numbers, laid out as :meth:`positions`
        reads them), unmasked (padding keys give 0)."""
        C, s = keys.shape[1], self.width
        b0, b1 = y0 * self.segments, y1 * self.segments
        start = 0
        for dy, e in zip(self.dys, self.half):
            m = s + 2 * e
            at = ((self.top + dy) * self.stride - e + b0 * s) * C
            k = keys.as_strided((b1 - b0, m, C), (s * C, C, 1), keys.storage_offset() + at)
            size = (b1 - b0) * s * m
            torch.bmm(q[b0:b1], k.transpose(1, 2), out=out[start : start + size].view(b1 - b0, s, m))
            start += size


class WindowCache:
    """Per-video state of :func:`predict_windowed`, owned and passed along by the caller.

    Holds the strip geometry of one feature-map size (:class:`_Strips`) and, by the
    caller's frame index, the padded channels-last keys and the largest key norm of the
    frames in the context: a frame stays in the context for up to ``context`` target
    frames, so its keys are laid out once. :meth:`retain` drops the frames that left the
    context.
    """

    def __init__(self) -> None:
        self._strips: _Strips | None = None
        self._keys: dict[int, torch.Tensor] = {}
        self._norms: dict[int, float] = {}

    def strips(self, h: int, w: int, cfg: PropagationConfig, device: torch.device) -> _Strips:
        """The geometry for an (h, w) feature map under ``cfg`` (built once)."""
        s = self._strips
        if s is None or (s.h, s.w, s.width, s.radius, s.mask.device) != (h, w, cfg.tile, cfg.radius, device):
            self._strips, self._keys = _Strips(h, w, cfg.radius, cfg.tile, device), {}
        return self._strips

    def keys(self, index: int, f: torch.Tensor, strips: _Strips) -> torch.Tensor:
        """Padded keys of frame ``index`` with features ``f`` (laid out on first use)."""
        if index not in self._keys:
            self._keys[index] = strips.keys(f)
        return self._keys[index]

    def norm(self, index: int, f: torch.Tensor) -> float:
        """Largest key norm of frame ``index`` with features ``f`` (computed on first use)."""
        if index not in self._norms:
            self._norms[index] = _key_norm(f)
        return self._norms[index]

    def retain(self, indices: Iterable[int]) -> None:
        """Forget the keys of every frame not in ``indices``."""
        keep = set(indices)
        self._keys = {i: k for i, k in self._keys.items() if i in keep}
        self._norms = {i: n for i, n in self._norms.items() if i in keep}


def predict_windowed(
    query: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor],
    previous: list[tuple[torch.Tensor, torch.Tensor, int]],
    cfg: PropagationConfig,
    cache: WindowCache | None = None,
    frame_ids: list[int] | None = None,
) -> torch.Tensor:
    """Soft labels of one frame from its context, computing local affinities only inside
    each query's disk (strips of :class:`_Strips`); bit-identical to :func:`predict_dense`
    (but for tie groups wider than the finalists, see :func:`_select_and_read`).

    Per chunk of query rows: the global product with the reference frame gives its best
    cells; the previous frames' disk affinities are stacked per frame, and since a query's
    k best candidates lie in its k best key positions by maximum over the frames, only the
    best few positions of every frame are read back. The k winners among these are chosen
    and read out by the computation shared with :func:`predict_dense` (exact recomputation
    of the finalists' affinities, ties broken by candidate index); a query whose candidates
    cannot settle it (a near-tie beyond the positions read back) gets every position of its
    disk, and in the rare case that the reference frame's cells left out can still compete
    it is computed densely.

    Args:
        query: (C, h, w) L2-normalised features of the target frame.
        first: (features (C, h, w'), labels (L, h, w')) of the reference frame, matched
            globally (every cell is a candidate).
        previous: (features (C, h, w), labels (L, h, w), multiplicity) of the previous
            context frames, matched within ``cfg.radius`` cells (``radius`` 0: globally);
            a multiplicity m > 1 counts the frame m times (the official context repeats
            the reference frame while fewer frames exist: CRW/HVC ``context_index``).
        cfg: temperature, top-k, radius, strip width (``tile``), query cells per chunk.
        cache: keys and geometry kept across the frames of a video (:class:`WindowCache`);
            None builds them for this call.
        frame_ids: the frame index of each ``previous`` entry, the ``cache`` key (needed
            with a ``cache``).
    Returns:
        (L, h, w) propagated soft labels.
    Raises:
        ValueError: ``cache`` without ``frame_ids`` of the same length as ``previous``.
    """
    C, h, w = query.shape
    if cache is None:
        cache, frame_ids = WindowCache(), list(range(len(previous)))
    if frame_ids is None or len(frame_ids) != len(previous):
        raise ValueError("predict_windowed: a cache needs one frame id per previous frame")
    norms = [cache.norm(i, f) for i, (f, _, _) in zip(frame_ids, previous)]
    qf = query.reshape(C, -1).T
    if cfg.radius == 0 or not previous:  # every candidate frame attended globally
        ctx = _Context.build(first, previous, norms)
        chunks = [_settle(qf[a : a + cfg.query_chunk], *_global_candidates(qf[a : a + cfg.query_chunk], ctx, cfg), ctx, cfg) for a in range(0, h * w, cfg.query_chunk)]  # fmt: skip
    else:
        strips = cache.strips(h, w, cfg, query.device)
        keys = [cache.keys(i, f, strips) for i, (f, _, _) in zip(frame_ids, previous)]
        ctx = _Context.build(first, previous, norms, [(kf, strips.cell_rows) for kf in keys])
        chunks = _disk_chunks(query, keys, strips, ctx, cfg)
    out, unsettled = (torch.cat(part) for part in zip(*chunks))
    return _finish(qf, out, unsettled, ctx, cfg, h, w).T.reshape(-1, h, w)


def _disk_chunks(query: torch.Tensor, keys: list[torch.Tensor], strips: _Strips, ctx: _Context, cfg: PropagationConfig) -> list:
    """:func:`_disk_rows` of the (C, h, w) ``query`` frame, chunk of rows by chunk:
    each chunk's stacked affinities hold as many numbers as a dense chunk of
    ``cfg.query_chunk`` queries against one frame."""
    C, h, w = query.shape
    qf, qs = query.reshape(C, -1).T, strips.queries(query)
    rows = max(1, cfg.query_chunk * h * w // (strips.stride * strips.ncols * len(keys)))
    buf = query.new_empty(len(keys), rows * strips.stride * strips.ncols)
    return [
        _disk_rows(qs, qf[y0 * w : min(y0 + rows, h) * w], keys, strips, ctx, cfg, y0, min(y0 + rows, h), buf)
        for y0 in range(0, h, rows)
    ]  # fmt: skip


def _global_candidates(q: torch.Tensor, ctx: _Context, cfg: PropagationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every frame attended globally: each frame's best cells for the (Q, C) queries →
    (approx (Q, n), ids (Q, n), excluded (Q,)) for :func:`_select_and_read`."""
    approx, ids, excluded = [], [], q.new_full(q.shape[:1], NEG)
    for j, f in enumerate(ctx.feats):
        v, i, out = _best(q @ f, cfg.topk + _REF_SPARE)
        approx.append(v)
        ids.append(i + ctx.offsets[j])
        excluded = torch.maximum(excluded, out)
    return torch.cat(approx, 1), torch.cat(ids, 1), excluded


def _disk_rows(
    qs: torch.Tensor,
    qr: torch.Tensor,
    keys: list[torch.Tensor],
    strips: _Strips,
    ctx: _Context,
    cfg: PropagationConfig,
    y0: int,
    y1: int,
    buf: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft labels (Q, L) of the query rows y0..y1-1 (strips ``qs``, features ``qr`` (Q, C))
    and (Q,) bool: rows left to the dense computation (:func:`_settle`).

    Candidates: the reference frame's best cells, and every previous frame's affinity at
    each query's best key positions by maximum over the previous frames (``buf``: room for
    the stacked disk affinities); a query not settled by them gets every position of its
    disk, and is left to the dense computation only if the reference frame's cells left out
    can still compete."""
    w, stride = strips.w, strips.stride
    v0, i0, out0 = _reference_candidates(qr, ctx, cfg)
    n = (y1 - y0) * stride
    a = buf[:, : n * strips.ncols]
    for j, kf in enumerate(keys):
        strips.affinity(qs, kf, y0, y1, a[j])
    # the real query cells (columns < w) among the n of the strips' rows
    real = (torch.arange(y1 - y0, device=a.device)[:, None] * stride + torch.arange(w, device=a.device)).flatten()
    pos = strips.positions(y1 - y0)[real]  # (Q, ncols)
    mask = strips.mask[y0 * stride : y1 * stride][real]
    key_index = strips.key_index[y0 * stride : y1 * stride][real]

    def candidates(rows: torch.Tensor, cols: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(approx, ids) of the reference cells and the previous frames at positions ``cols``
        ((R, kc); None: all) of the queries ``rows`` (R,)."""
        p, m, ki = pos[rows], mask[rows], key_index[rows]
        if cols is not None:
            p, m, ki = p.gather(1, cols), m.gather(1, cols), ki.gather(1, cols)
        vals = a.t()[p] + m[..., None]  # (R, kc, F)
        ids = ki[..., None] + ctx.offsets[1:-1]
        return torch.cat([v0[rows], vals.flatten(1)], 1), torch.cat([i0[rows], ids.flatten(1)], 1)

    everyone = torch.arange(len(qr), device=a.device)
    _, cols, out_pos = _best(a.amax(0)[pos] + mask, cfg.topk + _SPARE)  # (Q, kc)
    out, unsettled = _settle(qr, *candidates(everyone, cols), torch.maximum(out0, out_pos), ctx, cfg)
    wide = unsettled.nonzero()[:, 0]
    if len(wide):
        out[wide], unsettled[wide] = _settle(qr[wide], *candidates(wide, None), out0[wide], ctx, cfg)
    return out, unsettled


def _reference_candidates(qr: torch.Tensor, ctx: _Context, cfg: PropagationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference frame's best cells for the (Q, C) queries → (values, indices:
    (Q, _FINALISTS * k + 1), excluded (Q,)), as :func:`_best`: the k + _REF_SPARE best, or, where
    the one after them comes within the rounding margin of the k-th (a possible tie group),
    a finalist set's worth, so that :func:`_select_and_read` sees a tie group as crowded as
    the dense computation does (-inf fills the unused columns)."""
    aff = qr @ ctx.feats[0]
    wide = _FINALISTS * cfg.topk + 1
    v, i, out = _best(aff, cfg.topk + _REF_SPARE)
    k = min(cfg.topk, v.shape[1])
    tie = (out >= v[:, k - 1] - _margin(qr, ctx.key_norm)).nonzero()[:, 0]
    if v.shape[1] < min(wide, aff.shape[1]):
        v = torch.cat([v, v.new_full((v.shape[0], min(wide, aff.shape[1]) - v.shape[1]), NEG)], 1)
        i = torch.cat([i, i.new_zeros((i.shape[0], v.shape[1] - i.shape[1]))], 1)
    if len(tie):
        v[tie], i[tie], out[tie] = _best(aff[tie], v.shape[1])
    return v, i, out


def predict_dense(
    query: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor],
    previous: list[tuple[torch.Tensor, torch.Tensor, int]],
    cfg: PropagationConfig,
) -> torch.Tensor:
    """Reference: the same prediction from a dense affinity against every context cell,
    masked to the radius afterwards (the CRW/HVC code's computation; a frame repeated in
    the context is multiplied once and counted with its multiplicity). Same arguments and
    result as :func:`predict_windowed`."""
    C, h, w = query.shape
    ctx = _Context.build(first, previous)
    qf = query.reshape(C, -1).T
    cells = torch.arange(h * w, device=query.device)
    out = [_dense_rows(qf[a : a + cfg.query_chunk], cells[a : a + cfg.query_chunk], ctx, cfg, h, w) for a in range(0, h * w, cfg.query_chunk)]  # fmt: skip
    return torch.cat(out).T.reshape(-1, h, w)


# --------------------------------------------------------------------------- a whole video


def context_frames(t: int, n: int, start: int = 0) -> list[tuple[int, int]]:
    """Previous context of frame t as (frame index, multiplicity): frames t-n..t-1, where
    indices before ``start`` (the branch's reference frame) are frame ``start`` repeated
    (CRW ``context_index_bank``; HVC ``labelprop/common.py`` ``context_short(t0, t)``)."""
    if n == 0:
        return []
    idx = [max(start, t - n + i) for i in range(n)]
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and out[-1][0] == i:
            out[-1] = (i, out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


@torch.no_grad()
def propagate_video(
    encoder: torch.nn.Module,
    frames: list[np.ndarray],
    first_labels: np.ndarray,
    cfg: PropagationConfig,
    resolution: int | None = None,
    layer: str = "layer3",
    later_labels: dict[int, np.ndarray] | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    dense: bool = False,
) -> np.ndarray:
    """Propagate first-frame labels through a video.

    Args:
        encoder: callable ``encoder(x, layer)``: (1, 3, h, w) → (1, C, h/8, w/8).
        frames: T frames (H, W, 3) uint8.
        first_labels: (H, W) uint8 label map of frame 0 (0 = background).
        cfg: propagation hyper-parameters.
        resolution: short side of the network input (None = native).
        layer: encoder layer used for matching.
        later_labels: {t: (H, W) label map} of objects first annotated at frame t > 0
            (YouTube-VOS): from frame t on, those objects are propagated from frame t
            (see :func:`propagate_soft`); ids already annotated
            earlier are ignored, as the official code keeps each object's first mask only.
        device, bf16: where and in which precision features are computed.
        dense: use :func:`predict_dense` (reference) instead of the windowed computation.
    Returns:
        (T, H, W) uint8 predicted label maps; frame 0 is the given annotation. At a frame
        where objects first appear, their labels are exactly the annotation's (they are
        not propagated outside it); the other objects are propagated as usual.
    Raises:
        ValueError: empty first-frame annotation (nothing to propagate) or size mismatch.
    """
    later_labels = later_labels or {}
    H, W = first_labels.shape
    if frames[0].shape[:2] != (H, W):
        raise ValueError(f"frame size {frames[0].shape[:2]} differs from mask size {(H, W)}")
    num_objects = int(max([first_labels.max()] + [m.max() for m in later_labels.values()]))
    if first_labels.max() == 0 and not later_labels:
        raise ValueError("the first-frame annotation is empty: no object to propagate")
    fresh = _first_annotations(first_labels, later_labels)

    def features(frame: np.ndarray) -> torch.Tensor:
        x = preprocess(frame, resolution).to(device)
        return encode(encoder, x, layer, bf16)

    def soft(labels: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        return resize_labels(labels_to_onehot(labels, num_objects).to(device), hw)

    f0 = features(frames[0])
    hw = tuple(f0.shape[-2:])
    later = {t: soft(m, hw) for t, m in fresh.items()}
    out = np.zeros((len(frames), H, W), np.uint8)
    out[0] = first_labels
    rest = (features(frame) for frame in frames[1:])
    for t, pred in propagate_soft((f0, soft(first_labels, hw)), rest, cfg, later, dense):
        out[t] = _label_map(F.interpolate(pred[None], (H, W), mode="bilinear", align_corners=True)[0], fresh.get(t))
    return out


def _first_annotations(first_labels: np.ndarray, later_labels: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """{t: (H, W) uint8 labels of the objects whose first annotation is at frame t > 0
    (other objects set to 0)}: each object starts from its first annotation only."""
    seen = {int(i) for i in np.unique(first_labels)}
    fresh: dict[int, np.ndarray] = {}
    for t in sorted(later_labels):
        labels = later_labels[t]
        ids = [int(i) for i in np.unique(labels) if i > 0 and int(i) not in seen]
        if ids:
            fresh[t] = np.where(np.isin(labels, ids), labels, 0).astype(np.uint8)
            seen.update(ids)
    return fresh


def _label_map(full: torch.Tensor, fresh: np.ndarray | None) -> np.ndarray:
    """(L, H, W) upsampled soft labels → (H, W) uint8 argmax; where objects first appear
    (``fresh``: their (H, W) annotation), their labels are exactly the annotation's (not
    its blurred feature-size copy) and they are not predicted outside it."""
    if fresh is None:
        return full.argmax(0).to(torch.uint8).cpu().numpy()
    annotated = fresh > 0
    new_ids = [int(k) for k in np.unique(fresh) if k > 0]
    full[new_ids] = full[new_ids].masked_fill(~torch.from_numpy(annotated).to(full.device), float("-inf"))
    out = full.argmax(0).to(torch.uint8).cpu().numpy()
    out[annotated] = fresh[annotated]
    return out


def encode(encoder: torch.nn.Module, x: torch.Tensor, layer: str, bf16: bool = False) -> torch.Tensor:
    """Features of one preprocessed frame for matching: (1, 3, h, w) → (C, h/8, w/8), L2-normalised
    over channels, computed under bf16 autocast when ``bf16`` (see :func:`propagate_video`)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        f = encoder(x, layer)
    return F.normalize(f.float(), dim=1)[0]


def _present(labels: torch.Tensor) -> torch.Tensor:
    """(L, h, w) soft labels → (L,) bool: channels with any mass (HVC ``valid_mask``)."""
    return labels.flatten(1).sum(1) > 0


@torch.no_grad()
def propagate_soft(
    first: tuple[torch.Tensor, torch.Tensor],
    features: Iterable[torch.Tensor],
    cfg: PropagationConfig,
    later: dict[int, torch.Tensor] | None = None,
    dense: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Propagate soft labels frame by frame at feature resolution (no upsampling, no argmax).

    Each frame's prediction joins the context of the following ones (``cfg.context``
    previous frames, the reference frame repeated while fewer exist); features and
    cached keys of frames that left every context are dropped as the video goes on.

    Objects first annotated at a frame t > 0 (``later``), official HVC code
    (``infer_vos.py``, ``step_seg``): at frame t their annotation replaces the prediction
    where it has mass, (1 - s) * pred + s * annotation with s the annotation's mass per
    cell. Frame t then starts a propagation branch of its own: for every later frame,
    each branch predicts from its reference frame (attended globally) and the previous
    frames since it (``context_frames(t, n, start=t0)``), with the merged predictions as
    their labels, and the merged prediction is the sum of the branches' predictions, each
    over the channels it owns (frame 0: background and its objects; frame t: the objects
    that first appear there).

    Args:
        first: (features (C, h, w) L2-normalised, soft labels (L, h, w)) of frame 0.
        features: the (C, h, w) L2-normalised features of frames 1, 2, ... in order; may be
            a lazy generator (each frame's features are computed only when it is reached).
        cfg: propagation hyper-parameters.
        later: {t: (L, h, w) soft labels} of objects first annotated at frame t > 0; only
            object channels (1..) with mass that no earlier annotation had are read.
        dense: use :func:`predict_dense` (reference) instead of :func:`predict_windowed`.
    Yields:
        (t, (L, h, w) soft labels of frame t) for t = 1, 2, ..., one per item of ``features``.
    """
    later = later or {}
    n = cfg.context
    feats: dict[int, torch.Tensor] = {0: first[0]}
    soft: dict[int, torch.Tensor] = {0: first[1]}
    owned = {0: _present(first[1])}  # branch reference frame → channels it predicts
    known = owned[0].clone()
    cache = WindowCache()
    for t, f in enumerate(features, start=1):
        feats[t] = f
        pred = _predict_branches(t, owned, feats, soft, cfg, cache, dense)
        if t in later:
            pred, ids = _blend_new_objects(pred, later[t], known)
            if ids.any():
                known |= ids
                owned[t] = ids
        soft[t] = pred
        # only the branch references and the last n frames are needed from here on
        needed = {i for t0 in owned for i, _ in context_frames(t + 1, n, t0)} | set(owned)
        for i in [i for i in feats if i not in needed]:
            del feats[i], soft[i]
        cache.retain(needed)
        yield t, pred


def _predict_branches(
    t: int,
    owned: dict[int, torch.Tensor],
    feats: dict[int, torch.Tensor],
    soft: dict[int, torch.Tensor],
    cfg: PropagationConfig,
    cache: WindowCache,
    dense: bool,
) -> torch.Tensor:
    """(L, h, w) prediction of frame t (features ``feats[t]``): the sum over the branches
    (reference frame t0 → (L,) bool channels it owns) of each branch's prediction from
    ``feats[t0]`` and its previous frames (:func:`context_frames` since t0) on those channels."""
    out = 0
    for t0, mask in owned.items():
        ctx = context_frames(t, cfg.context, t0)
        previous = [(feats[i], soft[i], m) for i, m in ctx]
        if dense:
            pred = predict_dense(feats[t], (feats[t0], soft[t0]), previous, cfg)
        else:
            pred = predict_windowed(feats[t], (feats[t0], soft[t0]), previous, cfg, cache, [i for i, _ in ctx])
        out = out + mask.view(-1, 1, 1) * pred
    return out


def _blend_new_objects(pred: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend into the (L, h, w) prediction the (L, h, w) soft ``labels`` of the objects not
    ``known`` ((L,) bool) yet: (1 - s) * pred + s * labels, s their mass per cell (HVC
    ``infer_vos.py``, ``step_seg``). → (prediction, (L,) bool: the new object channels)."""
    new = labels.clone()
    ids = _present(new) & ~known
    ids[0] = False
    new[~ids] = 0
    if ids.any():
        present = new.sum(0, keepdim=True)
        pred = (1 - present) * pred + present * new
    return pred, ids


def merge_features(hvc: torch.Tensor, semantic: torch.Tensor, weight: float = 1.05) -> torch.Tensor:
    """Official feature merge: cat(weight * l2n(hvc), l2n(semantic)) then L2-normalise over channels.

    Both (1, C_i, h, w); the semantic map is resized to the HVC map's size if needed.
    """
    if semantic.shape[-2:] != hvc.shape[-2:]:
        semantic = F.interpolate(semantic.float(), hvc.shape[-2:], mode="bilinear", align_corners=False)
    merged = torch.cat([weight * F.normalize(hvc.float(), dim=1), F.normalize(semantic.float(), dim=1)], dim=1)
    return F.normalize(merged, dim=1)


def merged_encoder(encoder, semantic, weight: float = 1.05):
    """An encoder callable ``(x, layer) → merge_features(encoder(x, layer), semantic(x), weight)``:
    the official code's HVC + MoCo features (HVC ``infer_vos.py``, ``cfg.TEST.MERGE``), usable wherever an encoder is.

    Args:
        encoder: callable (1, 3, h, w), layer → (1, C, h/8, w/8).
        semantic: callable (1, 3, h, w) → (1, C', h', w'), e.g. :func:`hvc.eval.semantic.load_semantic_encoder`.
        weight: the HVC features' weight (official: 1.05).
    """
    return lambda x, layer: merge_features(encoder(x, layer), semantic(x), weight)
