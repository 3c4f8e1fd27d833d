"""Label propagation with a frozen encoder (paper §4.1; the CRW protocol; official HVC
code: ``infer_vos.py`` and ``labelprop/``).

In the order it runs: read frames → extract L2-normalised features → for each frame,
match every query cell against the context (the reference frame, attended globally, and
the previous ``context`` frames, each attended only within ``radius`` feature cells) →
keep the top-k affinities, softmax them with a temperature, and take the weighted sum of
the context's soft labels → upsample and argmax → write palette PNGs.

The radius-limited part is computed only inside a rectangle around each query's disk
(:class:`_Bands`: for each key row, the queries of the rows its disks reach, a segment of
columns at a time, in one batched matrix product on strided views, nothing gathered), the
previous frames' affinities are reduced to their maximum while still in cache, and only
the best few key positions of each query are read back. :func:`predict_dense` is the
reference dense computation (affinity against every context cell, masked afterwards, as
the CRW/HVC code computes it). Both paths choose the k winners on affinities recomputed by one shared
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

from hvc.inputs import NORMALIZATION

NEG = float("-inf")


@dataclass(frozen=True)
class PropagationConfig:
    """Propagation hyper-parameters (defaults: the official HVC code; CRW: topk 10, context 20, T 0.05).

    ``segment`` (query columns per matrix product of the windowed path) and
    ``query_chunk`` (query cells per chunk, bounds memory) only trade speed for memory:
    the result does not depend on them.
    """

    temperature: float = 0.1
    topk: int = 15
    context: int = 50
    radius: int = 12
    segment: int = 8
    query_chunk: int = 4096


# --------------------------------------------------------------------------- features


def preprocess(frame: np.ndarray, resolution: int | None, normalization: str = "imagenet") -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, h, w) float normalised, short side resized to ``resolution``."""
    x = torch.from_numpy(np.require(frame, requirements=("C", "W"))).permute(2, 0, 1)[None].float() / 255.0  # read-only: copied
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
_REF_BLOCK = 128


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


def _finish(q: torch.Tensor, chunks: list, ctx: _Context, cfg: PropagationConfig, h: int, w: int) -> torch.Tensor:
    """(h*w, L) soft labels from the windowed computation's ``chunks`` ((cells (Q,), soft
    labels (Q, L), unsettled (Q,) bool) each), the unsettled rows (those that need a
    candidate the windowed computation left out) computed densely (:func:`_dense_rows`;
    ``q``: (h*w, C))."""
    cells, part, part_unsettled = (torch.cat(p) for p in zip(*chunks))
    out, unsettled = part.new_empty(h * w, part.shape[1]), part_unsettled.new_empty(h * w)
    out[cells], unsettled[cells] = part, part_unsettled
    redo = unsettled.nonzero()[:, 0]
    for a in range(0, len(redo), cfg.query_chunk):
        cells = redo[a : a + cfg.query_chunk]
        out[cells] = _dense_rows(q[cells], cells, ctx, cfg, h, w)
    return out


class _Bands:
    """Where each query's disk of keys lies, for one feature-map size and radius.

    The disk of a query at (y, x) holds the cells strictly inside the radius R (as the
    CRW/HVC mask): rows y + dy, |dy| < R, columns x + dx, |dx| <= e(dy) = floor(sqrt(R² -
    dy² - 1)). Queries are cut into segments of ``width`` (s) columns. For one key row r and
    one segment, the queries of the G = 2R - 1 rows r - R + 1 .. r + R - 1 (G * s queries)
    all reach into the same W = s + 2R - 2 keys of row r, so one (G*s, C) x (C, W) matrix
    product gives every query of the segment its affinities with row r; batched over the
    key rows, a segment against one frame is a single ``bmm`` on strided views of two
    zero-padded channels-last buffers (no key or query copied). A query's products form a
    G x W rectangle around its disk, spread over G key rows of the output; a strided view
    (:meth:`rectangles`) reads them back as one row per query, and ``mask`` (0 inside the
    disk and the image, -inf elsewhere) and ``key_index`` (the key's cell in the h*w
    frame) give each of the G*W positions its meaning. Output of one frame per segment:
    ``Hp = h + 2(R-1)`` key rows (the R-1 at either end stay zero, so that every rectangle
    lies inside the buffer) of ``band = G*s*W`` numbers.
    """

    def __init__(self, h: int, w: int, radius: int, width: int, device: torch.device) -> None:
        self.h, self.w, self.width, self.radius = h, w, width, radius
        s, reach = width, radius - 1  # reach: largest |dy| (and |dx|) strictly inside the radius
        self.reach, self.G, self.W = reach, 2 * reach + 1, s + 2 * reach
        self.segments = math.ceil(w / s)
        self.Wp, self.Hp = self.segments * s + 2 * reach, h + 2 * reach  # key row length, output rows
        self.band = self.G * s * self.W
        self.seg_size = self.Hp * self.band
        # query slots, segment by segment, row by row (the cells of a chunk of segments
        # are then a contiguous range of the tables below)
        slot = torch.arange(self.segments * h * s, device=device)
        x, y = slot // (h * s) * s + slot % s, slot // s % h
        y, x = y[x < w], x[x < w]
        self.cells = y * w + x  # (h*w,) the cell of each slot
        self.starts = [min(b * s, w) * h for b in range(self.segments + 1)]  # first slot of each segment
        j = x % s
        d = torch.arange(self.G, device=device).view(-1, 1)  # dy = d - reach
        c = torch.arange(self.W, device=device).view(1, -1)  # dx = c - reach - j
        half = torch.tensor([math.isqrt(radius * radius - (dy - reach) ** 2 - 1) for dy in range(self.G)], device=device)
        dy, dx = (d - reach).view(1, -1, 1), c.view(1, 1, -1) - reach - j.view(-1, 1, 1)
        ky, kx = y.view(-1, 1, 1) + dy, x.view(-1, 1, 1) + dx
        ok = (dx.abs() <= half.view(1, -1, 1)) & (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)
        self.mask = torch.zeros(ok.shape, device=device).masked_fill_(~ok, NEG).reshape(h * w, -1)  # by slot
        self.key_index = (ky * w + kx).clamp(0, h * w - 1).reshape(h * w, -1)  # by slot
        self.cell_rows = torch.empty_like(self.cells)
        self.cell_rows[self.cells] = y * self.Wp + x + reach  # (h*w,) by cell: its row in keys()
        st_r, st_g = self.band, s * self.W
        # a query's rectangle in the output of consecutive segments: position d*W + c at
        # base + step, less the first segment's b0 * seg_size
        self.base = x // s * self.seg_size + y * st_r + 2 * reach * st_g + j * self.W
        self.step = (d * (st_r - st_g) + c).flatten()

    def keys(self, f: torch.Tensor) -> torch.Tensor:
        """(C, h, w) features → (h * Wp, C) channels-last rows, zero-padded by R-1 columns
        at either end (and up to a whole segment)."""
        C = f.shape[0]
        buf = f.new_zeros(self.h, self.Wp, C)
        buf[:, self.reach : self.reach + self.w] = f.permute(1, 2, 0)
        return buf.reshape(-1, C)

    def queries(self, q: torch.Tensor) -> torch.Tensor:
        """(C, h, w) features → (segments, Hp, s, C) channels-last segments, zero-padded by
        R-1 rows at either end (and columns >= w)."""
        C, s = q.shape[0], self.width
        buf = q.new_zeros(self.Hp, self.segments * s, C)
        buf[self.reach : self.reach + self.h, : self.w] = q.permute(1, 2, 0)
        return buf.view(self.Hp, self.segments, s, C).transpose(0, 1).contiguous()

    def affinity(self, qs: torch.Tensor, keys: torch.Tensor, b: int, out: torch.Tensor) -> None:
        """Affinities of segment b's queries (``qs`` from :meth:`queries`) with one frame's
        ``keys`` (:meth:`keys`), written into ``out`` (h * band contiguous numbers: key row r,
        query g * s + j (row r - R + 1 + g, column j), key c (column b * s - R + 1 + c))."""
        C, s, h = keys.shape[1], self.width, self.h
        q = qs.as_strided((h, self.G * s, C), (s * C, C, 1), qs.storage_offset() + b * self.Hp * s * C)
        k = keys.as_strided((h, self.W, C), (self.Wp * C, C, 1), keys.storage_offset() + b * s * C)
        torch.bmm(q, k.transpose(1, 2), out=out.view(h, self.G * s, self.W))

    def rectangles(self, out: torch.Tensor, b0: int, b1: int) -> torch.Tensor:
        """Output of segments b0..b1-1 (:meth:`affinity`, consecutive) → (Q, G * W) their
        queries' rectangles, one row per slot."""
        s, W, n = self.width, self.W, b1 - b0
        st_r, st_g = self.band, s * W
        shape, strides = (n, self.h, s, self.G, W), (self.seg_size, st_r, W, st_r - st_g, 1)
        view = out.as_strided(shape, strides, out.storage_offset() + 2 * self.reach * st_g)
        full = min(b1, self.w // s) - b0  # complete segments (only the last one can be partial)
        parts = [view[:full].reshape(-1, self.G * W)]
        if full < n:
            parts.append(view[full, :, : self.w - (b0 + full) * s].reshape(-1, self.G * W))
        return torch.cat(parts) if len(parts) > 1 else parts[0]


class WindowCache:
    """Per-video state of :func:`predict_windowed`, owned and passed along by the caller.

    Holds the band geometry of one feature-map size (:class:`_Bands`) and, by the
    caller's frame index, the padded channels-last keys and the largest key norm of the
    frames in the context: a frame stays in the context for up to ``context`` target
    frames, so its keys are laid out once. :meth:`retain` drops the frames that left the
    context. :meth:`buffer` is the room for the disk affinities, made once per context length.
    """

    def __init__(self) -> None:
        self._bands: _Bands | None = None
        self._buffer: torch.Tensor | None = None
        self._keys: dict[int, torch.Tensor] = {}
        self._norms: dict[int, float] = {}

    def bands(self, h: int, w: int, cfg: PropagationConfig, device: torch.device) -> _Bands:
        """The geometry for an (h, w) feature map under ``cfg`` (built once)."""
        s = self._bands
        if s is None or (s.h, s.w, s.width, s.radius, s.mask.device) != (h, w, cfg.segment, cfg.radius, device):
            self._bands, self._keys, self._buffer = _Bands(h, w, cfg.radius, cfg.segment, device), {}, None
        return self._bands

    def keys(self, index: int, f: torch.Tensor, bands: _Bands) -> torch.Tensor:
        """Padded keys of frame ``index`` with features ``f`` (laid out on first use)."""
        if index not in self._keys:
            self._keys[index] = bands.keys(f)
        return self._keys[index]

    def buffer(self, frames: int, bands: _Bands, cfg: PropagationConfig, like: torch.Tensor) -> torch.Tensor:
        """(frames + 1, n * seg_size) zeros of ``like``'s dtype and device (made once per
        shape): room for the disk affinities of ``frames`` frames and their maximum, for n
        segments at a time, n as many as hold about the numbers of a dense chunk
        (``cfg.query_chunk`` queries against every frame). Only the products are ever
        written, so the padding stays zero."""
        n = min(bands.segments, max(1, cfg.query_chunk * bands.h * bands.w // (bands.seg_size * frames)))
        b = self._buffer
        if b is None or b.shape != (frames + 1, n * bands.seg_size) or (b.device, b.dtype) != (like.device, like.dtype):
            self._buffer = like.new_zeros(frames + 1, n * bands.seg_size)
        return self._buffer

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
    """Soft labels of one frame from its context, computing local affinities only in a
    rectangle around each query's disk (:class:`_Bands`); bit-identical to
    :func:`predict_dense` (but for tie groups wider than the finalists, see
    :func:`_select_and_read`).

    Per chunk of query columns (segments): the global product with the reference frame
    gives its best cells; the previous frames' disk affinities are stacked per frame, and
    since a query's k best candidates lie in its k best key positions by maximum over the
    frames, only the best few positions of every frame are read back. The k winners among these are chosen
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
        cfg: temperature, top-k, radius, segment width, query cells per chunk.
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
        cells = torch.arange(h * w, device=query.device).split(cfg.query_chunk)
        chunks = [(c, *_settle(qf[c], *_global_candidates(qf[c], ctx, cfg), ctx, cfg)) for c in cells]
    else:
        bands = cache.bands(h, w, cfg, query.device)
        keys = [cache.keys(i, f, bands) for i, (f, _, _) in zip(frame_ids, previous)]
        ctx = _Context.build(first, previous, norms, [(kf, bands.cell_rows) for kf in keys])
        chunks = _disk_chunks(query, keys, bands, ctx, cfg, cache.buffer(len(keys), bands, cfg, query))
    return _finish(qf, chunks, ctx, cfg, h, w).T.reshape(-1, h, w)


def _disk_chunks(
    query: torch.Tensor, keys: list[torch.Tensor], bands: _Bands, ctx: _Context, cfg: PropagationConfig, buf: torch.Tensor
) -> list:
    """:func:`_disk_segments` of the (C, h, w) ``query`` frame, a chunk of segments at a time
    (``buf``: :meth:`WindowCache.buffer`)."""
    qf, qs = query.reshape(query.shape[0], -1).T.contiguous(), bands.queries(query)
    n = buf.shape[1] // bands.seg_size
    ends = [(b0, min(b0 + n, bands.segments)) for b0 in range(0, bands.segments, n)]
    return [_disk_segments(qs, qf, keys, bands, ctx, cfg, b0, b1, buf) for b0, b1 in ends]


def _disk_segments(
    qs: torch.Tensor,
    qf: torch.Tensor,
    keys: list[torch.Tensor],
    bands: _Bands,
    ctx: _Context,
    cfg: PropagationConfig,
    b0: int,
    b1: int,
    buf: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The query cells of segments b0..b1-1 (Q,), their soft labels (Q, L) and (Q,) bool:
    rows left to the dense computation (:func:`_settle`). ``qs``: the segments
    (:meth:`_Bands.queries`), ``qf``: (h*w, C) query features, ``buf``: (F + 1, n) room
    for the frames' affinities and their maximum, zero where no product is written.

    Candidates: the reference frame's best cells, and every previous frame's affinity at
    each query's best key positions by maximum over the previous frames; a query not settled
    by them gets every position of its disk, and is left to the dense computation only if
    the reference frame's cells left out can still compete."""
    size, F = bands.seg_size, len(keys)
    top = buf[F]
    for b in range(b0, b1):
        lo = (b - b0) * size + bands.reach * bands.band
        rows = slice(lo, lo + bands.h * bands.band)
        for j, kf in enumerate(keys):
            bands.affinity(qs, kf, b, buf[j, rows])
            if j:  # the maximum over frames, while this frame's products are in cache
                torch.maximum(top[rows], buf[j, rows], out=top[rows])
            else:
                top[rows].copy_(buf[j, rows])
    slots = slice(bands.starts[b0], bands.starts[b1])
    cells, mask, key_index = bands.cells[slots], bands.mask[slots], bands.key_index[slots]
    base = bands.base[slots] - b0 * size
    qr = qf[cells]
    v0, i0, out0 = _reference_candidates(qr, ctx, cfg)

    def candidates(rows: torch.Tensor, cols: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(approx, ids) of the reference cells and the previous frames at positions ``cols``
        ((R, kc); None: all) of the queries ``rows`` (R,)."""
        m, ki, step = mask[rows], key_index[rows], bands.step
        if cols is not None:
            m, ki, step = m.gather(1, cols), ki.gather(1, cols), step[cols]
        where = base[rows, None] + step
        vals = buf[:F].index_select(1, where.flatten()).view(F, *where.shape).permute(1, 2, 0) + m[..., None]
        ids = ki[..., None] + ctx.offsets[1:-1]
        return torch.cat([v0[rows], vals.flatten(1)], 1), torch.cat([i0[rows], ids.flatten(1)], 1)

    everyone = torch.arange(len(cells), device=buf.device)
    _, cols, out_pos = _best(bands.rectangles(top, b0, b1) + mask, cfg.topk + _SPARE)  # (Q, kc)
    out, unsettled = _settle(qr, *candidates(everyone, cols), torch.maximum(out0, out_pos), ctx, cfg)
    wide = unsettled.nonzero()[:, 0]
    if len(wide):
        out[wide], unsettled[wide] = _settle(qr[wide], *candidates(wide, None), out0[wide], ctx, cfg)
    return cells, out, unsettled


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


def _reference_candidates(qr: torch.Tensor, ctx: _Context, cfg: PropagationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference frame's best cells for the (Q, C) queries → (values, indices:
    (Q, _FINALISTS * k + 1), excluded (Q,)), as :func:`_best`: the k + _REF_SPARE best, or, where
    the one after them comes within the rounding margin of the k-th (a possible tie group),
    a finalist set's worth, so that :func:`_select_and_read` sees a tie group as crowded as
    the dense computation does (-inf fills the unused columns). Blocks of _REF_BLOCK
    queries: their affinities stay in cache between the product and the selection."""
    parts = [_reference_block(q, ctx, cfg) for q in qr.split(_REF_BLOCK)]
    return tuple(torch.cat(p) for p in zip(*parts))


def _reference_block(qr: torch.Tensor, ctx: _Context, cfg: PropagationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_reference_candidates` of one block of queries."""
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
    num_objects = video_objects(frames, first_labels, later_labels)
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


def video_objects(frames: list[np.ndarray], first_labels: np.ndarray, later_labels: dict[int, np.ndarray]) -> int:
    """The number of objects of a video to propagate: the largest label of its (H, W) first
    and later annotations, after checking them against the (H, W, 3) frames.

    Raises:
        ValueError: the frames' size differs from the masks', or nothing is annotated.
    """
    H, W = first_labels.shape
    if frames[0].shape[:2] != (H, W):
        raise ValueError(f"frame size {frames[0].shape[:2]} differs from mask size {(H, W)}")
    if first_labels.max() == 0 and not later_labels:
        raise ValueError("the first-frame annotation is empty: no object to propagate")
    return int(max([first_labels.max()] + [m.max() for m in later_labels.values()]))


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
