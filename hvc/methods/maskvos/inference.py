"""Mask-VOS's own inference: mask-embedded decoding with recurrent refinement.

[P] Li et al., CVPR 2023, §3.3 "Testing" and Tables 4b, 4e; [C] github.com/0liliulei/Mask-VOS
infer_mask.py, models/framework_mask.py ``segment_with_memory``, models/modules.py
``MemoryBank_dotproduct``. Per frame t ≥ 1, with references = the first frame and the
previous ``context`` frames (their E keys, V values per object, and masks at stride 8):

* A = softmax over all reference cells of keys_r · key_t / τ (Eq. 6); ``mode="official"``
  keeps the top-k entries and masks non-first references outside a disk of ``radius``
  cells (CRW's ``MaskedAttention``);
* V_t = Aᵀ V_r (Eq. 7) and the coarse mask Ȳ_t = Aᵀ Y_r (Eq. 8);
* round 0: the prediction is Ȳ_t (upsampled); rounds r = 1..R: Ŷ = D([V_t, V([I_t, Ŷ^{r−1}])])
  with Ŷ^0 = Ȳ_t (Eq. 9 then its recurrence, Table 4e: R = 3). The paper's "round 0"
  decodes from V_t alone, which the trained decoder (input [V_t, V̄_t]) cannot do; we read
  it as the coarse mask. ``mode="official"``: the output is the mean of the decoder's
  probabilities and the upsampled Ȳ_t (infer_mask.py averages the decoder's aggregated
  logits, log(p / (1 − p)), with Ȳ_t's probabilities, so its logits dominate; we average
  two probabilities).

Frame t then joins the references with the one-hot of its predicted labels (objects first
annotated at t pasted in), its values V([I_t, Y_t^k]) and key. The plain label propagation
of the key features (:func:`hvc.propagation.propagate_video`, preset
:data:`hvc.methods.maskvos.params.PRESET`) stays available beside this.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hvc.propagation import labels_to_onehot, resize_labels, video_objects
from hvc.inputs import normalize_input
from hvc.methods.maskvos.loss import decode_objects
from hvc.methods.maskvos.model import STRIDE
from hvc.methods.maskvos.params import MaskVOSInference


def _frame_input(frame: np.ndarray, padded: tuple[int, int], scale: float, device) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, Hp, Wp) ImageNet-normalised, resized by ``scale`` (1 = native)
    and zero-padded at the bottom/right to ``padded``."""
    x = torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1)[None]
    x = normalize_input(x, "imagenet")
    if scale != 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return F.pad(x, (0, padded[1] - x.shape[-1], 0, padded[0] - x.shape[-2])).to(device)


def _disk(h: int, w: int, radius: int, device) -> torch.Tensor:
    """(h·w, h·w) bool: key cell within Euclidean distance < ``radius`` of query cell
    ([C] labelprop/crw.py ``MaskedAttention.make``)."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pts = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    return torch.cdist(pts, pts) < radius


def memory_affinity(keys: torch.Tensor, query: torch.Tensor, cfg: MaskVOSInference, hw: tuple[int, int]) -> torch.Tensor:
    """A (Eq. 6) of one query frame against its references, chunked over the query cells.

    Args:
        keys: (N, D, h, w) reference keys, frame 0 first; query: (D, h, w).
        cfg: temperature, and for the official mode topk and radius (non-first references).
    Returns:
        (N·h·w, h·w), each column a distribution over the reference cells.
    """
    n, d = keys.shape[:2]
    k = keys.permute(1, 0, 2, 3).reshape(d, -1)
    q = query.reshape(d, -1)
    disk = _disk(*hw, cfg.radius, q.device) if cfg.radius is not None and n > 1 else None
    cols = []
    for c0 in range(0, q.shape[1], cfg.query_chunk):
        logits = (k.t() @ q[:, c0 : c0 + cfg.query_chunk]) / cfg.temperature  # (N·hw, c)
        if disk is not None:
            far = ~disk[:, c0 : c0 + cfg.query_chunk]
            logits = logits.view(n, -1, logits.shape[-1])
            logits[1:] = logits[1:].masked_fill(far[None], float("-inf"))
            logits = logits.view(-1, logits.shape[-1])
        if cfg.topk is not None and cfg.topk < logits.shape[0]:
            kth = logits.topk(cfg.topk, dim=0).values[-1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        cols.append(logits.softmax(dim=0))
    return torch.cat(cols, dim=1)


class _Memory:
    """Reference frames of the inference: {frame: (key (D, h, w), values (K, D', h, w),
    masks (K + 1, h, w))}, frame 0 and the last ``context`` frames kept."""

    def __init__(self, context: int) -> None:
        self.context = context
        self.frames: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add(self, t: int, key: torch.Tensor, values: torch.Tensor, masks: torch.Tensor) -> None:
        self.frames[t] = (key, values, masks)
        for i in [i for i in self.frames if i != 0 and i <= t - self.context]:
            del self.frames[i]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, D, h, w), (N, K, D', h, w), (N, K + 1, h, w) in frame order (frame 0 first)."""
        order = sorted(self.frames)
        return tuple(torch.stack([self.frames[i][j] for i in order]) for j in range(3))  # type: ignore[return-value]


def _padded_onehot(labels: np.ndarray, num: int, scale: float, padded: tuple[int, int], device) -> torch.Tensor:
    """(H, W) labels → (K + 1, Hp, Wp) one-hot of the labels resized by ``scale`` (nearest)
    and padded with background to ``padded``."""
    lab = torch.from_numpy(labels.astype(np.int64))
    if scale != 1.0:
        size = (round(labels.shape[0] * scale), round(labels.shape[1] * scale))
        lab = F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0].long()
    lab = F.pad(lab, (0, padded[1] - lab.shape[1], 0, padded[0] - lab.shape[0]))
    return labels_to_onehot(lab.numpy(), num).to(device)


def _values(value_encoder, x: torch.Tensor, feats: dict[str, torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """V([I, Y^k]) of each object: x (1, 3, Hp, Wp), masks (K, Hp, Wp) → (K, D', h, w)."""
    k = masks.shape[0]
    return value_encoder(x.expand(k, -1, -1, -1), masks[:, None], feats["res4"].expand(k, -1, -1, -1))


def _predict(modules: dict, x: torch.Tensor, feats: dict, memory: _Memory, cfg: MaskVOSInference) -> torch.Tensor:
    """Soft prediction (K + 1, Hp, Wp) of one frame (module docstring)."""
    keys, values, masks = memory.stacked()
    hw = tuple(keys.shape[-2:])
    aff = memory_affinity(keys, feats["key"][0], cfg, hw)
    n, k = values.shape[:2]
    v_t = (values.permute(1, 2, 0, 3, 4).reshape(-1, aff.shape[0]) @ aff).reshape(1, k, -1, *hw)
    coarse = (masks.permute(1, 0, 2, 3).reshape(k + 1, -1) @ aff).reshape(1, k + 1, *hw)
    coarse = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    pred = coarse
    for _ in range(cfg.rounds):
        logits = decode_objects(modules["value_encoder"], modules["decoder"], x, feats, v_t, pred[None, 1:])
        pred = logits.softmax(dim=1)[0]
    if cfg.mode == "official" and cfg.rounds > 0:
        pred = (pred + coarse) / 2
    return pred


@torch.no_grad()
def propagate_video_maskvos(
    modules: dict[str, torch.nn.Module],
    frames: list[np.ndarray],
    first_labels: np.ndarray,
    cfg: MaskVOSInference | None = None,
    later_labels: dict[int, np.ndarray] | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Segment a video with Mask-VOS's mask-embedded inference (module docstring).

    Args:
        modules: ``{"encoder": E, "value_encoder": V, "decoder": D}``, frozen, on ``device``
            (:meth:`MaskVOS.load_encoder`, :meth:`MaskVOS.load_inference_modules`).
        frames: T frames (H, W, 3) uint8, native resolution ([C]: halved when 960 pixels
            wide or wider, official mode only).
        first_labels: (H, W) labels of frame 0 (0 = background).
        cfg: :class:`MaskVOSInference` (default: the paper's settings).
        later_labels: {t: (H, W)} labels of objects first annotated at frame t > 0: pasted
            over the prediction of frame t, then propagated.
    Returns:
        (T, H, W) uint8 label maps; frame 0 is the annotation.
    Raises:
        ValueError: empty first annotation, sizes that differ, or a module missing.
    """
    missing = {"encoder", "value_encoder", "decoder"} - set(modules)
    if missing:
        raise ValueError(f"Mask-VOS inference needs modules {sorted(missing)}")
    cfg = cfg or MaskVOSInference()
    later_labels = later_labels or {}
    H, W = first_labels.shape
    num = video_objects(frames, first_labels, later_labels)
    scale = 0.5 if cfg.mode == "official" and W >= 960 else 1.0
    h8, w8 = -(-round(H * scale) // STRIDE), -(-round(W * scale) // STRIDE)
    padded = (h8 * STRIDE, w8 * STRIDE)
    out = np.zeros((len(frames), H, W), np.uint8)
    out[0] = first_labels
    memory = _Memory(cfg.context)
    for t, frame in enumerate(frames):
        x = _frame_input(frame, padded, scale, device)
        feats = modules["encoder"].features(x)
        if t > 0:
            pred = _predict(modules, x, feats, memory, cfg)
            inside = round(H * scale), round(W * scale)
            pred = F.interpolate(pred[None, :, : inside[0], : inside[1]], size=(H, W), mode="bilinear", align_corners=False)[0]
            result = pred.argmax(0).to(torch.uint8).cpu().numpy()
            if t in later_labels:
                result = np.where(later_labels[t] > 0, later_labels[t], result).astype(np.uint8)
            out[t] = result
        full = _padded_onehot(out[t], num, scale, padded, device)
        memory.add(t, feats["key"][0], _values(modules["value_encoder"], x, feats, full[1:]), resize_labels(full, (h8, w8)))
    return out


def propagate(encode, frames, first_labels, later_labels, p, device, extras=None, benchmark=None) -> np.ndarray:
    """The method's inference as the harness calls it (:class:`hvc.config.registry.MethodSpec`
    ``inference``): :func:`propagate_video_maskvos` with ``maskvos.inference`` and the modules
    the harness loaded from the model folder (``extras``: the encoder, the value encoder and
    the decoder; random ones for a random initialisation). Raises as that function."""
    modules = {k: m.to(device) for k, m in (extras or {}).items()}
    return propagate_video_maskvos(modules, frames, first_labels, p.maskvos.inference, later_labels, device)
