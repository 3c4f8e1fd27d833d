"""Label propagation with a frozen encoder (paper §4.1; HVC-SPEC §4; the CRW protocol).

In the order it runs: read frames → extract L2-normalised features → for each frame,
match every query cell against the context (the first frame, attended globally, and the
previous ``context`` frames, each attended only within ``radius`` feature cells) → keep
the top-k affinities, softmax them with a temperature, and take the weighted sum of the
context's soft labels → upsample and argmax → write palette PNGs.

The radius-limited part is computed only inside each query's window: queries are
grouped in s x s tiles and each tile is matched against the (s + 2R)^2 key cells that
contain all of its windows (one batched matrix product per context frame), then cells
outside each query's disk are masked. :func:`predict_dense` is the reference dense
computation (affinity against every context cell, masked afterwards); both give the
same top-k candidates.

:func:`propagate_soft` is the frame loop on soft labels at feature resolution, shared by
segmentation (:func:`propagate_video` upsamples and argmaxes each frame) and pose
tracking (:mod:`hvc.pose` reads joints out of propagated heatmaps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from hvc.views import NORMALIZATION

NEG = float("-inf")


@dataclass(frozen=True)
class PropagationConfig:
    """Propagation hyper-parameters (defaults: the official HVC code; CRW: topk 10, context 20, T 0.05)."""

    temperature: float = 0.1
    topk: int = 15
    context: int = 50
    radius: int = 12
    keep_first: bool = True
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


def _merge_topk(
    best: tuple[torch.Tensor, torch.Tensor] | None, vals: torch.Tensor, labs: torch.Tensor, k: int, times: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k: (Q, k) values and (Q, k, L) labels, merged with new candidates.

    ``times`` > 1 counts each new candidate that many times (a context frame repeated in
    the official context); min(times, k) copies give the same top-k.
    """
    if times > 1:
        vals, labs = vals.repeat_interleave(min(times, k), 1), labs.repeat_interleave(min(times, k), 1)
    if best is not None:
        vals = torch.cat([best[0], vals], dim=1)
        labs = torch.cat([best[1], labs], dim=1)
    kk = min(k, vals.shape[1])
    top, idx = vals.topk(kk, dim=1)
    return top, labs.gather(1, idx[..., None].expand(-1, -1, labs.shape[-1]))


def _topk_candidates(aff: torch.Tensor, key_labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """aff (Q, N) and key_labels (N, L) or (Q, N, L) → top-k values (Q, k') and labels (Q, k', L)."""
    kk = min(k, aff.shape[1])
    vals, idx = aff.topk(kk, dim=1)
    if key_labels.dim() == 2:
        return vals, key_labels[idx]
    return vals, key_labels.gather(1, idx[..., None].expand(-1, -1, key_labels.shape[-1]))


def _readout(best: tuple[torch.Tensor, torch.Tensor], temperature: float) -> torch.Tensor:
    """Softmax over the top-k affinities / T, weighted sum of labels → (Q, L)."""
    vals, labs = best
    w = torch.softmax(vals / temperature, dim=1)
    w = torch.nan_to_num(w, nan=0.0)  # a query with no finite candidate gets no label mass
    return (w[..., None] * labs).sum(1)


@lru_cache(maxsize=16)
def _disk_mask(tile: int, radius: int) -> torch.Tensor:
    """(tile², (tile+2R)²) bool: key cell of the tile's window lies within ``radius`` of the query cell."""
    win = tile + 2 * radius
    qy, qx = torch.meshgrid(torch.arange(tile), torch.arange(tile), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(win) - radius, torch.arange(win) - radius, indexing="ij")
    d = torch.sqrt(((qy.reshape(-1, 1) - ky.reshape(1, -1)) ** 2 + (qx.reshape(-1, 1) - kx.reshape(1, -1)) ** 2).float())
    return d < radius  # strict, as the CRW/HVC neighbourhood mask


def _tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(C, h, w) → (n_tiles, tile², C), zero-padded to whole tiles."""
    C, h, w = x.shape
    ph, pw = -h % tile, -w % tile
    x = F.pad(x, (0, pw, 0, ph))
    ty, tx = x.shape[1] // tile, x.shape[2] // tile
    return x.reshape(C, ty, tile, tx, tile).permute(1, 3, 2, 4, 0).reshape(ty * tx, tile * tile, C)


def _windows(x: torch.Tensor, tile: int, radius: int, channels_last: bool = True) -> torch.Tensor:
    """(C, h, w) → (n_tiles, (tile+2R)², C) (or (n_tiles, C, (tile+2R)²) when not
    ``channels_last``): each tile's key window, zero-padded outside the image; contiguous."""
    C, h, w = x.shape
    ph, pw = -h % tile, -w % tile
    x = F.pad(x, (radius, radius + pw, radius, radius + ph))
    win = tile + 2 * radius
    cols = F.unfold(x[None], kernel_size=win, stride=tile)  # (1, C*win², n_tiles)
    cols = cols[0].reshape(C, win * win, -1)
    return (cols.permute(2, 1, 0) if channels_last else cols.permute(2, 0, 1)).contiguous()


def _untile(y: torch.Tensor, h: int, w: int, tile: int) -> torch.Tensor:
    """(n_tiles, tile², L) → (L, h, w)."""
    L = y.shape[-1]
    ty, tx = math.ceil(h / tile), math.ceil(w / tile)
    y = y.reshape(ty, tx, tile, tile, L).permute(4, 0, 2, 1, 3).reshape(L, ty * tile, tx * tile)
    return y[:, :h, :w]


_WINDOWS: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def window_cache(feats: torch.Tensor, labels: torch.Tensor, tile: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Key windows of a context frame's features (n, C, win²) and labels (n, win², L).

    A frame stays in the context for up to ``context`` target frames, so its windows are
    built once and kept (keyed by the tensors' identity) until :func:`clear_window_cache`.
    """
    key = (id(feats), id(labels), tile, radius)
    if key not in _WINDOWS:
        _WINDOWS[key] = (_windows(feats, tile, radius, channels_last=False), _windows(labels, tile, radius))
    return _WINDOWS[key]


def clear_window_cache(keep: set[int] | None = None) -> None:
    """Forget cached windows, except those of feature tensors whose ``id`` is in ``keep``."""
    for key in list(_WINDOWS):
        if keep is None or key[0] not in keep:
            del _WINDOWS[key]


def predict_windowed(
    query: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor],
    previous: list[tuple[torch.Tensor, torch.Tensor, int]],
    cfg: PropagationConfig,
) -> torch.Tensor:
    """Soft labels of one frame from its context, computing local affinities only in windows.

    Args:
        query: (C, h, w) L2-normalised features of the target frame.
        first: (features (C, h, w'), labels (L, h, w')) of the global reference, matched
            globally: the first frame, or, once later objects appear, the first frame and
            the frames where they appear, concatenated along the width.
        previous: (features, labels, multiplicity) of the previous context frames, matched
            within ``cfg.radius`` cells; a multiplicity m > 1 counts the frame m times (the
            official context repeats the first frame while fewer frames exist).
        cfg: temperature, top-k, radius, tile size, query chunk.
    Returns:
        (L, h, w) propagated soft labels.
    """
    C, h, w = query.shape
    R, s, k = cfg.radius, cfg.tile, cfg.topk
    q_tiles = _tiles(query, s)  # (n, s², C)
    n_tiles = q_tiles.shape[0]
    f0, l0 = first
    keys0 = f0.reshape(C, -1)  # (C, hw)
    labs0 = l0.reshape(l0.shape[0], -1).T  # (hw, L)
    if R > 0:
        disk = _disk_mask(s, R).to(query.device)
        ones = torch.ones(1, h, w, device=query.device, dtype=query.dtype)
        valid = _windows(ones, s, R)[..., 0] > 0  # (n, win²) key inside the image
    tiles_per_chunk = max(1, cfg.query_chunk // (s * s))
    out = []
    for a in range(0, n_tiles, tiles_per_chunk):
        b = min(a + tiles_per_chunk, n_tiles)
        q = q_tiles[a:b]  # (t, s², C)
        qf = q.reshape(-1, C)
        best = _topk_candidates(qf @ keys0, labs0, k)  # first frame: global
        if R > 0:
            blocked = ~(disk[None] & valid[a:b, None, :])  # (t, s², win²): outside the disk or the image
        for f, lab, m in previous:
            if R > 0:
                f_win, lab_win = window_cache(f, lab, s, R)
                aff = torch.bmm(q, f_win[a:b]).masked_fill_(blocked, NEG)  # (t, s², win²)
                vals, idx = aff.topk(min(k, aff.shape[-1]), dim=-1)  # (t, s², k)
                labs = lab_win[a:b].gather(1, idx.reshape(b - a, -1, 1).expand(-1, -1, lab_win.shape[-1]))
                vals, labs = vals.reshape(qf.shape[0], -1), labs.reshape(qf.shape[0], vals.shape[-1], -1)
            else:  # no radius: every cell of the frame is a candidate
                vals, labs = _topk_candidates(qf @ f.reshape(C, -1), lab.reshape(lab.shape[0], -1).T, k)
            best = _merge_topk(best, vals, labs, k, times=m)
        out.append(_readout(best, cfg.temperature).reshape(b - a, s * s, -1))
    return _untile(torch.cat(out), h, w, s)


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
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float().to(query.device)
    qf = query.reshape(C, -1).T
    out = []
    for a in range(0, qf.shape[0], cfg.query_chunk):
        aff = qf[a : a + cfg.query_chunk] @ keys  # (q, F*hw)
        if cfg.radius > 0 and len(frames) > 1:
            local = torch.cdist(pos[a : a + cfg.query_chunk], pos) < cfg.radius  # (q, hw)
            everywhere = torch.ones(local.shape[0], first[0][0].numel(), dtype=torch.bool, device=local.device)
            mask = torch.cat([everywhere] + [local] * (len(frames) - 1), dim=1)  # the reference: global
            aff = aff.masked_fill(~mask, NEG)
        out.append(_readout(_topk_candidates(aff, labs, cfg.topk), cfg.temperature))
    return torch.cat(out).T.reshape(-1, h, w)


# --------------------------------------------------------------------------- a whole video


def context_frames(t: int, n: int) -> list[tuple[int, int]]:
    """Previous context of frame t as (frame index, multiplicity): frames t-n..t-1, where
    indices before 0 are the first frame repeated (CRW/HVC ``context_index_bank``)."""
    if n == 0:
        return []
    idx = [max(0, t - n + i) for i in range(n)]
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
            (YouTube-VOS): from frame t on, those pixels take the given labels and frame t
            joins the first frame as a globally attended reference.
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

    def features(frame: np.ndarray) -> torch.Tensor:
        x = preprocess(frame, resolution).to(device)
        return encode(encoder, x, layer, bf16)

    def soft(labels: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        return resize_labels(labels_to_onehot(labels, num_objects).to(device), hw)

    f0 = features(frames[0])
    hw = tuple(f0.shape[-2:])
    later = {t: soft(m, hw) for t, m in later_labels.items()}
    out = np.zeros((len(frames), H, W), np.uint8)
    out[0] = first_labels
    rest = (features(frame) for frame in frames[1:])
    for t, pred in propagate_soft((f0, soft(first_labels, hw)), rest, cfg, later, dense):
        full = F.interpolate(pred[None], (H, W), mode="bilinear", align_corners=True)[0]
        if t not in later_labels:
            out[t] = full.argmax(0).to(torch.uint8).cpu().numpy()
            continue
        # new objects: the annotation itself, not its blurred feature-size copy
        labels = later_labels[t]
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
    previous frames, the first frame repeated while fewer exist); features and cached
    windows of frames that left the context are dropped as the video goes on.

    Args:
        first: (features (C, h, w) L2-normalised, soft labels (L, h, w)) of frame 0.
        features: the (C, h, w) L2-normalised features of frames 1, 2, ... in order; may be
            a lazy generator (each frame's features are computed only when it is reached).
        cfg: propagation hyper-parameters.
        later: {t: (L, h, w) soft labels, channel 0 background} of objects first annotated
            at frame t > 0: where their channels 1.. have mass they replace the prediction,
            and frame t, with these labels, joins frame 0 in the globally attended
            reference (its cells are candidates of the same top-k).
        dense: use :func:`predict_dense` (reference) instead of :func:`predict_windowed`.
    Yields:
        (t, (L, h, w) soft labels of frame t) for t = 1, 2, ..., one per item of ``features``.
    """
    later = later or {}
    predict = predict_dense if dense else predict_windowed
    feats, soft = [first[0]], [first[1]]
    reference = first  # attended globally: frame 0, then every frame where objects appear
    try:
        for t, f in enumerate(features, start=1):
            feats.append(f)
            previous = [(feats[i], soft[i], m) for i, m in context_frames(t, cfg.context)]
            pred = predict(f, reference, previous, cfg)
            if t in later:
                new = later[t]
                present = new[1:].sum(0, keepdim=True).clamp(0, 1)
                pred = (1 - present) * pred + present * new
                # frame t joins the global reference with its labels (old objects as
                # propagated, new ones as annotated): its cells compete in the same top-k
                reference = (torch.cat([reference[0], f], dim=-1), torch.cat([reference[1], pred], dim=-1))
            soft.append(pred)
            if not dense:  # windows of frames that left the context are not needed any more
                clear_window_cache({id(feats[i]) for i, _ in context_frames(t + 1, cfg.context)})
            # only the context window of features is needed from here on
            drop = t - max(cfg.context, 1)
            if drop > 0:
                feats[drop] = soft[drop] = None  # type: ignore[call-overload]
            yield t, pred
    finally:
        clear_window_cache()


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
    the official code's HVC + MoCo features (HVC-SPEC §4), usable wherever an encoder is.

    Args:
        encoder: callable (1, 3, h, w), layer → (1, C, h/8, w/8).
        semantic: callable (1, 3, h, w) → (1, C', h', w'), e.g. :func:`hvc.semantic.load_semantic_encoder`.
        weight: the HVC features' weight (official: 1.05).
    """
    return lambda x, layer: merge_features(encoder(x, layer), semantic(x), weight)
