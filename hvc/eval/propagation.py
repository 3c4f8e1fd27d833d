"""Label propagation with a frozen encoder (paper §4.1; the CRW protocol; official HVC
code: ``infer_vos.py`` and ``labelprop/``).

In the order it runs: read frames → extract L2-normalised features → for each frame,
match every query cell against the context (the reference frame, attended globally, and
the previous ``context`` frames, each attended only within ``radius`` feature cells) →
keep the top-k affinities, softmax them with a temperature, and take the weighted sum of
the context's soft labels → upsample and argmax → write palette PNGs.

The radius-limited part is computed only inside each query's disk (:class:`_Strips`:
strips of queries along a row against the few keys of each row that their disks reach,
batched matrix products on strided views, no window gathered) and only the k best key
positions of each query are read back. :func:`predict_dense` is the reference dense
computation (affinity against every context cell, masked afterwards, as the CRW/HVC code
computes it); both give the same top-k candidates.

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


def _readout(best: tuple[torch.Tensor, torch.Tensor], temperature: float) -> torch.Tensor:
    """Softmax over the top-k affinities / T, weighted sum of labels → (Q, L)."""
    vals, labs = best
    w = torch.softmax(vals / temperature, dim=1)
    w = torch.nan_to_num(w, nan=0.0)  # a query with no finite candidate gets no label mass
    return (w[..., None] * labs).sum(1)


def _merge_ids(
    best: tuple[torch.Tensor, torch.Tensor] | None, vals: torch.Tensor, ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k of (Q, n) candidate values with their (Q, n) ids in a label table."""
    if best is not None:
        vals, ids = torch.cat([best[0], vals], 1), torch.cat([best[1], ids], 1)
    top, idx = vals.topk(min(k, vals.shape[1]), dim=1)
    return top, ids.gather(1, idx)


def _topk_candidates(aff: torch.Tensor, key_labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """aff (Q, N) and key_labels (N, L) → top-k values (Q, k') and their labels (Q, k', L)."""
    vals, idx = aff.topk(min(k, aff.shape[1]), dim=1)
    return vals, key_labels[idx]


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

    Holds the strip geometry of one feature-map size (:class:`_Strips`) and the padded
    channels-last keys of the frames in the context, by the caller's frame index: a
    frame stays in the context for up to ``context`` target frames, so its keys are laid
    out once. :meth:`retain` drops the frames that left the context.
    """

    def __init__(self) -> None:
        self._strips: _Strips | None = None
        self._keys: dict[int, torch.Tensor] = {}

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

    def retain(self, indices: Iterable[int]) -> None:
        """Forget the keys of every frame not in ``indices``."""
        keep = set(indices)
        self._keys = {i: k for i, k in self._keys.items() if i in keep}


def predict_windowed(
    query: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor],
    previous: list[tuple[torch.Tensor, torch.Tensor, int]],
    cfg: PropagationConfig,
    cache: WindowCache | None = None,
    frame_ids: list[int] | None = None,
) -> torch.Tensor:
    """Soft labels of one frame from its context, computing local affinities only inside
    each query's disk (strips of :class:`_Strips`; same top-k as :func:`predict_dense`).

    Per chunk of query rows: the global product with the reference frame gives its
    top-k; the previous frames' disk affinities are stacked per frame, and since a
    query's k best candidates lie in its k best key positions by maximum over the frames,
    only those k positions of every frame are read back for the final top-k. Labels are
    looked up once, for the k winners.

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
    k = cfg.topk
    f0, l0 = first
    keys0 = f0.reshape(C, -1)  # (C, hw0)
    labs0 = l0.reshape(l0.shape[0], -1).T  # (hw0, L)
    table = [labs0] + [lab.reshape(lab.shape[0], -1).T for _, lab, _ in previous]
    offsets = np.cumsum([0] + [t.shape[0] for t in table])
    table = torch.cat(table)  # (hw0 + n*hw, L): every candidate's labels, by id
    if cfg.radius == 0 or not previous:  # every candidate frame attended globally
        qf = query.reshape(C, -1).T
        out = []
        for a in range(0, qf.shape[0], cfg.query_chunk):
            qc = qf[a : a + cfg.query_chunk]
            vals, ids = (qc @ keys0).topk(min(k, keys0.shape[1]), dim=1)
            best = (vals, ids)
            for i, (f, _, m) in enumerate(previous):
                v, ix = (qc @ f.reshape(C, -1)).topk(min(k, h * w), dim=1)
                r = min(m, k)
                best = _merge_ids(best, v.repeat_interleave(r, 1), (ix + int(offsets[i + 1])).repeat_interleave(r, 1), k)
            out.append(_readout((best[0], table[best[1]]), cfg.temperature))
        return torch.cat(out).T.reshape(-1, h, w)
    if cache is None:
        cache, frame_ids = WindowCache(), list(range(len(previous)))
    if frame_ids is None or len(frame_ids) != len(previous):
        raise ValueError("predict_windowed: a cache needs one frame id per previous frame")
    strips = cache.strips(h, w, cfg, query.device)
    keys = [cache.keys(i, f, strips) for i, (f, _, _) in zip(frame_ids, previous)]
    reps = torch.tensor([min(m, k) for _, _, m in previous], device=query.device)
    frame_of = torch.repeat_interleave(torch.arange(len(previous), device=query.device), reps)
    frame_offset = torch.as_tensor(offsets[1:-1], device=query.device)[frame_of].view(1, -1, 1)
    qs = strips.queries(query)
    # rows of queries per chunk: the stacked affinities hold as many numbers as a dense
    # chunk of query_chunk queries against one frame
    rows = max(1, cfg.query_chunk * h * w // (strips.stride * strips.ncols * len(previous)))
    kc = min(k, strips.ncols)
    buf = query.new_empty(len(previous), rows * strips.stride * strips.ncols)
    out = query.new_empty(h, w, table.shape[1])
    for y0 in range(0, h, rows):
        y1 = min(y0 + rows, h)
        n = (y1 - y0) * strips.stride
        # the reference frame, globally (real query cells only)
        qr = query[:, y0:y1].reshape(C, -1).T
        v0, i0 = (qr @ keys0).topk(min(k, keys0.shape[1]), dim=1)
        # previous frames inside the disk: k best positions by maximum over the frames
        a = buf[:, : n * strips.ncols]
        for j, kf in enumerate(keys):
            strips.affinity(qs, kf, y0, y1, a[j])
        pos = strips.positions(y1 - y0)  # (n, ncols)
        mask = strips.mask[y0 * strips.stride : y1 * strips.stride]
        _, cols = (a.amax(0)[pos] + mask).topk(kc, dim=1)  # (n, kc)
        vals = a[:, pos.gather(1, cols)] + mask.gather(1, cols)  # (F, n, kc)
        vals = vals[frame_of].permute(1, 0, 2).reshape(n, -1)  # frames counted with their multiplicity
        ids = (strips.key_index[y0 * strips.stride : y1 * strips.stride].gather(1, cols)[:, None] + frame_offset).reshape(n, -1)
        real = vals.view(y1 - y0, strips.stride, -1)[:, :w].reshape(-1, vals.shape[1])
        real_ids = ids.view(y1 - y0, strips.stride, -1)[:, :w].reshape(-1, ids.shape[1])
        best = _merge_ids((v0, i0), real, real_ids, k)
        out[y0:y1] = _readout((best[0], table[best[1]]), cfg.temperature).view(y1 - y0, w, -1)
    return out.permute(2, 0, 1).contiguous()


def predict_dense(
    query: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor],
    previous: list[tuple[torch.Tensor, torch.Tensor, int]],
    cfg: PropagationConfig,
) -> torch.Tensor:
    """Reference: the same prediction from a dense affinity against every context cell,
    masked to the radius afterwards (the CRW/HVC code's computation). Same arguments and
    result as :func:`predict_windowed`."""
    C, h, w = query.shape
    frames = [first[0]] + [f for f, _, m in previous for _ in range(m)]
    labels = [first[1]] + [lab for _, lab, m in previous for _ in range(m)]
    keys = torch.cat([f.reshape(C, -1) for f in frames], dim=1)  # (C, F*hw)
    labs = torch.cat([lab.reshape(lab.shape[0], -1) for lab in labels], dim=1).T  # (F*hw, L)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).to(query.device)  # integer cells: exact distances
    qf = query.reshape(C, -1).T
    out = []
    for a in range(0, qf.shape[0], cfg.query_chunk):
        aff = qf[a : a + cfg.query_chunk] @ keys  # (q, F*hw)
        if cfg.radius > 0 and len(frames) > 1:
            d2 = ((pos[a : a + cfg.query_chunk, None] - pos[None]) ** 2).sum(-1)
            local = d2 < cfg.radius**2  # (q, hw): strictly inside the radius

            everywhere = torch.ones(local.shape[0], first[0][0].numel(), dtype=torch.bool, device=local.device)
            mask = torch.cat([everywhere] + [local] * (len(frames) - 1), dim=1)  # the reference: global
            aff = aff.masked_fill(~mask, NEG)
        out.append(_readout(_topk_candidates(aff, labs, cfg.topk), cfg.temperature))
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
    # each object starts from its first annotation only
    seen = {int(i) for i in np.unique(first_labels)}
    fresh: dict[int, np.ndarray] = {}
    for t in sorted(later_labels):
        labels = later_labels[t]
        ids = [int(i) for i in np.unique(labels) if i > 0 and int(i) not in seen]
        if ids:
            fresh[t] = np.where(np.isin(labels, ids), labels, 0).astype(np.uint8)
            seen.update(ids)

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
        full = F.interpolate(pred[None], (H, W), mode="bilinear", align_corners=True)[0]
        if t not in fresh:
            out[t] = full.argmax(0).to(torch.uint8).cpu().numpy()
            continue
        # new objects: the annotation itself, not its blurred feature-size copy
        labels = fresh[t]
        annotated = labels > 0
        new_ids = [int(k) for k in np.unique(labels) if k > 0]
        full[new_ids] = full[new_ids].masked_fill(~torch.from_numpy(annotated).to(full.device), float("-inf"))
        out[t] = full.argmax(0).to(torch.uint8).cpu().numpy()
        out[t][annotated] = labels[annotated]
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

    def predict(f: torch.Tensor, t: int, ref: tuple[torch.Tensor, torch.Tensor], start: int) -> torch.Tensor:
        ctx = context_frames(t, n, start)
        previous = [(feats[i], soft[i], m) for i, m in ctx]
        if dense:
            return predict_dense(f, ref, previous, cfg)
        return predict_windowed(f, ref, previous, cfg, cache, [i for i, _ in ctx])

    for t, f in enumerate(features, start=1):
        feats[t] = f
        pred = sum(mask.view(-1, 1, 1) * predict(f, t, (feats[t0], soft[t0]), t0) for t0, mask in owned.items())
        if t in later:
            new = later[t].clone()
            ids = _present(new) & ~known
            ids[0] = False
            new[~ids] = 0
            if ids.any():
                present = new.sum(0, keepdim=True)
                pred = (1 - present) * pred + present * new
                known |= ids
                owned[t] = ids
        soft[t] = pred
        # only the branch references and the last n frames are needed from here on
        needed = {i for t0 in owned for i, _ in context_frames(t + 1, n, t0)} | set(owned)
        for i in [i for i in feats if i not in needed]:
            del feats[i], soft[i]
        cache.retain(needed)
        yield t, pred


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
