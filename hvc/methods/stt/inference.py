"""STT's own label propagation: VFS-style, with the square window on every context frame.

Li & Liu, CVPR 2023, §4.1 ("the semantical label of first frame as well as previous
predictions are propagated"); the settings and the computation follow the authors' code
github.com/qianduoduolr/Spa-then-Temp, vcl/models/trackers/vanilla_tracker.py
(``VanillaTracker.forward_test``), vcl/models/common/local_attention.py
(``masked_attention_efficient``), vcl/models/common/affinity_utils.py (``spatial_neighbor``,
``mode='square'``) and configs/test/res18_d8.py.

How it differs from the generic propagation (``hvc.propagation``):

* the square window (half-width ``radius`` = neighbor_range // 2 cells, |dy| ≤ R and
  |dx| ≤ R) applies to the first frame too (``with_first_neighbor=True``); the generic
  propagation attends the first frame globally and uses a disk (dy² + dx² < R²);
* the context of frame t is frames max(0, t − n) .. t − 1 plus the first frame (so frame 0
  enters twice while t ≤ n); the generic one pads t − n .. t − 1 with repeats of the first;
* first-frame labels reach the feature grid by nearest resizing (PIL's, here
  ``nearest-exact``) of the label map, the generic one by bilinear resizing of one-hot maps;
* each frame's soft labels are upsampled bilinearly (``align_corners=False``) to the frame
  size, each channel min-max normalised (where its maximum is > 0), then argmaxed.

Shared with the generic propagation: L2-normalised features, joint top-k over all context
cells, softmax of affinity / temperature, soft labels fed back as context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hvc.propagation import labels_to_onehot, video_objects
from hvc.inputs import normalize_input
from hvc.methods.stt.params import PRESET, RADIUS_BY_BENCHMARK

NEG = float("-inf")


@dataclass(frozen=True)
class STTPropagation:
    """STT's inference settings (defaults: [C] configs/test/res18_d8.py, DAVIS).

    Attributes:
        topk: affinities kept per query (10).
        context: previous frames (``precede_frames`` 20), plus the first frame.
        temperature: softmax temperature on cosine similarities (0.07).
        radius: half-width of the square window, feature cells (neighbor_range 24 // 2 = 12;
            JHMDB 5, VIP 16); 0 attends globally.
        resolution: short side of the network input, pixels (480), None = native.
        layer: encoder layer ("layer3" = res4, stride 8).
        query_chunk: about this many query cells (whole rows) per matrix product (memory
            and speed only; [C] ``step``).
    """

    topk: int = 10
    context: int = 20
    temperature: float = 0.07
    radius: int = 12
    resolution: int | None = 480
    layer: str = "layer3"
    query_chunk: int = 512


def stt_settings(benchmark: str | None = None, **overrides: object) -> STTPropagation:
    """:class:`STTPropagation` from the method's :data:`~hvc.methods.stt.params.PRESET`, with
    the square half-width of ``benchmark`` (:data:`~hvc.methods.stt.params.RADIUS_BY_BENCHMARK`;
    others keep DAVIS's) and explicit ``overrides`` on top. JHMDB and VIP inputs are resized
    to 320 x 320 and 560 x 560 in the authors' configs, not by short side: pass
    ``resolution`` accordingly. Raises TypeError for an unknown setting."""
    keys = {"topk", "context", "temperature", "radius", "resolution"}
    base = {k: v for k, v in PRESET.items() if k in keys} | {"layer": PRESET["feature_layer"]}
    if benchmark in RADIUS_BY_BENCHMARK:
        base["radius"] = RADIUS_BY_BENCHMARK[benchmark]
    return STTPropagation(**(base | overrides))  # type: ignore[arg-type]


def square_mask(h: int, w: int, cells: torch.Tensor, radius: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """(Q, n) bool: key cell within the square of half-width ``radius`` around each query
    cell of ``cells`` (Q,) (row-major on the h × w grid), for the key cells of grid rows
    ``rows`` = (r0, r1) (default all: n = h·w; else n = (r1 − r0)·w); ``radius`` 0:
    everything ([C] ``spatial_neighbor`` with ``mode='square'``: rows i − R .. i + R,
    columns j − R .. j + R)."""
    r0, r1 = rows or (0, h)
    if radius <= 0:
        return torch.ones(cells.shape[0], (r1 - r0) * w, dtype=torch.bool, device=cells.device)
    keys = torch.arange(r0 * w, r1 * w, device=cells.device)
    ky, kx, qy, qx = keys // w, keys % w, cells // w, cells % w
    return ((ky[None] - qy[:, None]).abs() <= radius) & ((kx[None] - qx[:, None]).abs() <= radius)


def predict_square(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, cfg: STTPropagation) -> torch.Tensor:
    """Soft labels of one frame ([C] ``masked_attention_efficient``, ``non_mask_len=0``).

    Queries go in bands of whole rows (about ``cfg.query_chunk`` cells); a band is matched
    only against the key rows its squares reach (every other key is masked out in [C]'s
    dense affinity anyway), so the candidates and the result are [C]'s.

    Args:
        query: (C, h, w) L2-normalised features of the frame.
        keys: (T, C, h, w) L2-normalised features of the context frames.
        values: (T, L, h, w) their soft labels.
        cfg: top-k, temperature, radius, chunk.
    Returns:
        (L, h, w): for each query cell the softmax(affinity / τ)-weighted sum of the labels of
        its top-k context cells (within the square window of every context frame).
    """
    c, h, w = query.shape
    t, n_labels = keys.shape[0], values.shape[1]
    out = query.new_zeros(n_labels, h, w)
    band = max(1, cfg.query_chunk // w)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        r0, r1 = (0, h) if cfg.radius <= 0 else (max(0, y0 - cfg.radius), min(h, y1 + cfg.radius))
        k_flat = keys[:, :, r0:r1].permute(0, 2, 3, 1).reshape(-1, c)  # (T·rows·w, C)
        v_flat = values[:, :, r0:r1].permute(0, 2, 3, 1).reshape(-1, n_labels)
        cells = torch.arange(y0 * w, y1 * w, device=query.device)
        aff = (k_flat @ query[:, y0:y1].reshape(c, -1)) / cfg.temperature  # (T·rows·w, Q)
        near = square_mask(h, w, cells, cfg.radius, (r0, r1)).T  # (rows·w, Q)
        aff = aff.view(t, -1, cells.shape[0]).masked_fill(~near, NEG).view(-1, cells.shape[0])
        top, idx = aff.topk(min(cfg.topk, aff.shape[0]), dim=0)  # (k, Q)
        out[:, y0:y1] = torch.einsum("kq,kql->lq", top.softmax(dim=0), v_flat[idx]).view(n_labels, y1 - y0, w)
    return out


def _features(encoder: torch.nn.Module, frame: np.ndarray, cfg: STTPropagation, device: torch.device | str) -> torch.Tensor:
    """(H, W, 3) uint8 → (C, h, w) L2-normalised features, short side resized to
    ``cfg.resolution`` ([C] configs/test/base_data.py: Resize (-1, 480)). The encoder is
    the harness's (:func:`hvc.eval.encoders.load_encoder`): fed ImageNet-normalised RGB, it
    converts to Lab with mean (50, 0, 0) std (50, 127, 127) inside (its encoder spec), as
    [C] RGB2LAB does."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
    if cfg.resolution is not None:
        s = cfg.resolution / min(x.shape[-2:])
        size = (round(x.shape[-2] * s), round(x.shape[-1] * s))
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    f = encoder(normalize_input(x, "imagenet").to(device), cfg.layer)
    return F.normalize(f.float(), dim=1)[0]


def _label_map(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(L, h, w) soft labels → (H, W) uint8: bilinear upsampling, per-channel min-max
    normalisation where the channel's maximum is > 0, argmax ([C] vanilla_tracker.py)."""
    up = F.interpolate(soft[None], size, mode="bilinear", align_corners=False)[0]
    lo, hi = up.flatten(1).min(1).values[:, None, None], up.flatten(1).max(1).values[:, None, None]
    up = torch.where(hi > 0, (up - lo) / (hi - lo + 1e-12), up)
    return up.argmax(0).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def propagate_video_stt(
    encoder: torch.nn.Module,
    frames: list[np.ndarray],
    first_labels: np.ndarray,
    later_labels: dict[int, np.ndarray] | None = None,
    settings: STTPropagation | None = None,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Propagate the first frame's labels through a video with STT's inference.

    Args:
        encoder: the frozen STT encoder (``encoder(x, layer)``, Lab input).
        frames: T frames (H, W, 3) uint8.
        first_labels: (H, W) int labels of frame 0 (0 = background).
        later_labels: objects first annotated after frame 0; STT's inference (as the
            authors' DAVIS/JHMDB/VIP protocol) has none, so any given raises.
        settings: :class:`STTPropagation` (default: DAVIS).
    Returns:
        T label maps (H, W) uint8, frame 0 = ``first_labels``.
    Raises:
        ValueError: size mismatch, empty annotation, or later labels.
    """
    cfg = settings or STTPropagation()
    if later_labels:
        raise ValueError("STT's propagation has no objects appearing after the first frame (later_labels given)")
    n_obj = video_objects(frames, first_labels, {})
    size = first_labels.shape
    feats = [_features(encoder, frames[0], cfg, device)]
    grid = F.interpolate(torch.from_numpy(first_labels.astype(np.float32))[None, None], feats[0].shape[-2:], mode="nearest-exact")
    soft = [labels_to_onehot(grid[0, 0].numpy().astype(np.int64), n_obj).to(feats[0].device)]
    out = [first_labels.astype(np.uint8)]
    for t in range(1, len(frames)):
        feats.append(_features(encoder, frames[t], cfg, device))
        ctx = [0] + list(range(max(0, t - cfg.context), t))
        pred = predict_square(feats[t], torch.stack([feats[i] for i in ctx]), torch.stack([soft[i] for i in ctx]), cfg)
        soft.append(pred)
        out.append(_label_map(pred, size))
        if t - cfg.context >= 1:  # frames before t - n + 1 never return (frame 0 is kept)
            feats[t - cfg.context], soft[t - cfg.context] = None, None  # type: ignore[call-overload]
    return out


def propagate(encode, frames, first_labels, later_labels, p, device, extras=None, benchmark=None) -> list[np.ndarray]:
    """The method's inference as the harness calls it (:class:`hvc.config.registry.MethodSpec`
    ``inference``): :func:`propagate_video_stt` with the propagation section as STT's
    encoders get it (its preset, :data:`~hvc.methods.stt.params.PRESET`, filling what the
    files leave out) and, unless ``propagation.radius`` is set explicitly, the square
    half-width of ``benchmark`` (:data:`~hvc.methods.stt.params.RADIUS_BY_BENCHMARK`).
    Raises as :func:`propagate_video_stt`."""
    q = p.propagation
    radius = q.radius if "radius" in q.model_fields_set or benchmark not in RADIUS_BY_BENCHMARK else RADIUS_BY_BENCHMARK[benchmark]
    cfg = STTPropagation(topk=q.topk, context=q.context, temperature=q.temperature, radius=radius, resolution=q.resolution, layer=q.feature_layer)
    return propagate_video_stt(encode, frames, first_labels, later_labels, cfg, device)
