"""LIIR's own label propagation (its inference in the harness: :func:`propagate`).

Li et al., CVPR 2022, §3.3 and §3.2 ("we replace A with Ã during inference"); the numbers
where the paper is silent from github.com/shasha521/LIIR_pytorch (evaluate_davis.py,
models/colorizer_momen.py, models/mast_momen.py), as MAST does it:

* reference frames I_0, I_5, I_{t-5}, I_{t-3}, I_{t-1} (those before t; [P] §3.3);
* features at stride 4 (64-d post-conv), raw dot products, no temperature (Eq. 1), each
  reference searched in a window of radius R = 14 feature cells (29 × 29, mast_momen.py
  ``self.R = 14`` at test), one softmax over the windows of all references;
* the compact affinity Ã (Eq. 7): rows whose top value exceeds 0.1 are replaced by a mixture
  of two Gaussians (FWHM 1 cell, weights = softmax of the two top values) at the row's two
  highest cells (colorizer_momen.py);
* labels of each reference (one-hot, the first annotation or the earlier prediction) taken
  every 4th pixel onto the feature grid, copied by the affinity, foreground channels × 1.05,
  upsampled bilinearly to the frame and arg-maxed.

The one softmax over all references, and the top-2 peaks searched over that joint row, are
our reading of applying Eq. 7 with several references (the paper states it for one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hvc.propagation import labels_to_onehot, video_objects
from hvc.inputs import normalize_input
from hvc.methods.liir.config import LIIRConfig
from hvc.methods.liir.loss import window_gaussians, window_size

_DEFAULT = LIIRConfig()


@dataclass(frozen=True)
class LIIRInference:
    """LIIR's inference settings (defaults: :class:`hvc.methods.liir.config.LIIRConfig`).

    Attributes:
        references: reference frames; non-negative entries are absolute frame indices,
            negative ones are relative to the current frame t (0, 5, -5, -3, -1).
        radius: window radius R per reference, feature cells (14 at stride 4).
        stride: feature stride, input pixels per cell (4); labels are sampled every
            ``stride`` pixels.
        compact_threshold: rows whose top affinity exceeds this use Ã (0.1).
        peaks: Gaussians of Ã (2).
        fwhm: full width at half maximum of each Gaussian, cells (1).
        foreground_gain: factor on the foreground label channels (1.05).
    """

    references: tuple[int, ...] = _DEFAULT.test_references
    radius: int = _DEFAULT.test_radius
    stride: int = _DEFAULT.label_stride
    compact_threshold: float = _DEFAULT.compact_test_threshold
    peaks: int = _DEFAULT.compact_peaks
    fwhm: float = _DEFAULT.compact_fwhm
    foreground_gain: float = _DEFAULT.test_foreground_gain

    def reference_frames(self, t: int) -> list[int]:
        """The distinct reference frames of frame t (> 0), in order, all in [0, t)."""
        out: list[int] = []
        for r in self.references:
            i = r if r >= 0 else t + r
            if 0 <= i < t and i not in out:
                out.append(i)
        return out


def joint_compact_affinity(affinity: torch.Tensor, cells: int, peaks: int = 2, fwhm: float = 1.0, threshold: float = 0.1) -> torch.Tensor:
    """Ã over the concatenated windows of several references (Eq. 7 with the code's fixed
    Gaussians, as :func:`hvc.methods.liir.loss.compact_target`): for each row whose top value
    exceeds ``threshold``, Σ_m ω_m exp(-4 ln 2 · d²/fwhm²) over the window of the reference
    holding peak m, ω = softmax of the ``peaks`` top values; other rows unchanged.

    Args:
        affinity: (N, K·P²) rows, K windows of P² = ``cells`` cells each (P odd).
    Returns:
        (N, K·P²).
    Raises:
        ValueError: the row length is not a multiple of ``cells``, or ``cells`` not a square.
    """
    p = math.isqrt(cells)
    if p * p != cells or affinity.shape[-1] % cells:
        raise ValueError(f"affinity rows of {affinity.shape[-1]} cells are not windows of {cells} cells")
    values, index = torch.topk(affinity, peaks, dim=-1)
    weights = values.softmax(dim=-1)
    ref, cell = torch.div(index, cells, rounding_mode="floor"), index % cells
    bumps = weights[..., None] * window_gaussians(cell, p, fwhm, affinity.dtype)  # (N, M, P²)
    k = affinity.shape[-1] // cells
    target = torch.zeros(affinity.shape[0], k, cells, dtype=affinity.dtype, device=affinity.device)
    target.scatter_add_(1, ref[..., None].expand(-1, -1, cells), bumps)
    target = target.flatten(1)
    return torch.where((values[:, 0] > threshold)[:, None], target, affinity)


def local_logits(query: torch.Tensor, ref: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window dot products of :func:`hvc.methods.liir.loss.window_logits` for one frame
    pair, computed one window offset at a time (a correlation sampler: memory O(C·h·w), not
    O(C·P²·h·w), for full-resolution frames).

    Args:
        query, ref: (C, h, w) features.
    Returns:
        (logits (h·w, P²), valid (h·w, P²) bool), window cell k = (dy + R)·P + (dx + R).
    """
    c, h, w = query.shape
    p = window_size(radius)
    padded = F.pad(ref, (radius, radius, radius, radius))
    inside = F.pad(torch.ones(1, h, w, device=ref.device), (radius, radius, radius, radius))
    logits = torch.empty(p * p, h, w, device=query.device, dtype=query.dtype)
    valid = torch.empty(p * p, h, w, device=query.device, dtype=torch.bool)
    for ky in range(p):
        for kx in range(p):
            logits[ky * p + kx] = (query * padded[:, ky : ky + h, kx : kx + w]).sum(0)
            valid[ky * p + kx] = inside[0, ky : ky + h, kx : kx + w] > 0.5
    return logits.flatten(1).t(), valid.flatten(1).t()


def _onehot_grid(labels: np.ndarray, num: int, stride: int, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(H, W) label map → (1, num + 1, h, w) one-hot sampled every ``stride`` pixels, padded
    with background to the feature grid."""
    onehot = labels_to_onehot(labels[::stride, ::stride], num).to(device)
    full = torch.zeros(num + 1, *hw, device=device)
    full[0] = 1.0
    full[:, : onehot.shape[1], : onehot.shape[2]] = onehot
    return full[None]


def _feature_fn(encoder, size: tuple[int, int], padded: tuple[int, int], stride: int, device: torch.device | str):
    """frame (H, W, 3) uint8 → (1, C, Hp/s, Wp/s) features of the frame zero-padded to ``padded``.

    Raises:
        ValueError: features not at ``stride``.
    """
    (H, W), (Hp, Wp) = size, padded

    def features(frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1)[None]  # a writable copy
        x = F.pad(normalize_input(x, "imagenet"), (0, Wp - W, 0, Hp - H)).to(device)
        f = encoder(x, "layer3").float()
        if f.shape[-2:] != (Hp // stride, Wp // stride):
            raise ValueError(f"features {tuple(f.shape[-2:])} of a {Hp}x{Wp} input are not at stride {stride}")
        return f

    return features


def _predict_frame(query: torch.Tensor, refs: list[tuple[torch.Tensor, torch.Tensor]], cfg: LIIRInference) -> torch.Tensor:
    """Soft labels (1, L, h, w) of one frame from its reference frames' (features (1, C, h, w),
    one-hot labels (1, L, h, w)): one softmax over the joint row of every reference's window,
    the compact affinity, then each window's labels weighted by it."""
    p = window_size(cfg.radius)
    cells = p * p
    logits, valids = zip(*(local_logits(query[0], f[0], cfg.radius) for f, _ in refs))
    joint = torch.cat([lg.masked_fill(~v, float("-inf")) for lg, v in zip(logits, valids)], dim=-1).softmax(-1)
    joint = joint_compact_affinity(joint, cells, cfg.peaks, cfg.fwhm, cfg.compact_threshold)
    num_labels, hw = refs[0][1].shape[1], query.shape[-2:]
    pred = torch.zeros(1, num_labels, *hw, device=query.device)
    for k, (_, lab) in enumerate(refs):
        cols = F.unfold(lab, p, padding=cfg.radius).view(num_labels, cells, -1)  # (L, P², h·w)
        pred += (cols * joint[:, k * cells : (k + 1) * cells].t()[None]).sum(1).view(1, num_labels, *hw)
    return pred


@torch.no_grad()
def propagate_video_liir(
    encoder,
    frames: list[np.ndarray],
    first_labels: np.ndarray,
    cfg: LIIRInference | None = None,
    later_labels: dict[int, np.ndarray] | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Propagate first-frame labels through a video with LIIR's inference (module docstring).

    Args:
        encoder: ``encoder(x, layer)``: (1, 3, H', W') ImageNet-normalised RGB → (1, C, H'/s,
            W'/s) features (the harness's propagation interface; a LIIR ``encoder.pt`` is fed
            Lab inside, :class:`hvc.eval.encoders.Renormalized`). Frames are zero-padded to
            multiples of the stride ``s``.
        frames: T frames (H, W, 3) uint8 at native resolution ([U] evaluate_davis.py: 480p).
        first_labels: (H, W) uint8 labels of frame 0 (0 = background).
        later_labels: {t: (H, W)} labels of objects first annotated at frame t > 0
            (YouTube-VOS): pasted over the prediction of frame t, then propagated.
    Returns:
        (T, H, W) uint8 label maps; frame 0 is the annotation.
    Raises:
        ValueError: empty first annotation, sizes that differ, or features whose stride is not
            ``cfg.stride``.
    """
    cfg = cfg or LIIRInference()
    later_labels = later_labels or {}
    H, W = first_labels.shape
    num = video_objects(frames, first_labels, later_labels)
    s = cfg.stride
    Hp, Wp = -(-H // s) * s, -(-W // s) * s
    features = _feature_fn(encoder, (H, W), (Hp, Wp), s, device)
    feats = [features(frames[0])]
    hw = tuple(feats[0].shape[-2:])
    labels = [_onehot_grid(first_labels, num, s, hw, device)]
    out = np.zeros((len(frames), H, W), np.uint8)
    out[0] = first_labels
    gain = torch.tensor([1.0] + [cfg.foreground_gain] * num, device=device).view(1, -1, 1, 1)
    for t in range(1, len(frames)):
        feats.append(features(frames[t]))
        pred = _predict_frame(feats[t], [(feats[i], labels[i]) for i in cfg.reference_frames(t)], cfg)
        up = F.interpolate(pred * gain, size=(Hp, Wp), mode="bilinear", align_corners=False)[0, :, :H, :W]
        result = up.argmax(0).to(torch.uint8).cpu().numpy()
        if t in later_labels:
            result = np.where(later_labels[t] > 0, later_labels[t], result).astype(np.uint8)
        out[t] = result
        labels.append(_onehot_grid(result, num, s, hw, device))
        keep = {i for j in range(t + 1, min(t + 6, len(frames))) for i in cfg.reference_frames(j)}
        for i in range(t):  # free what no later frame reads (frames 0 and 5 stay)
            if i not in keep and feats[i] is not None and i not in (0, 5):
                feats[i] = labels[i] = None
    return out


def propagate(encode, frames, first_labels, later_labels, p, device, extras=None, benchmark=None) -> np.ndarray:
    """The method's inference as the harness calls it (:class:`hvc.config.registry.MethodSpec`
    ``inference``): :func:`propagate_video_liir` with the window radius of
    ``p.propagation.radius`` (LIIR's preset: 14 cells). ``extras`` (inference modules
    besides the encoder) are not used. Returns and raises as :func:`propagate_video_liir`."""
    cfg = LIIRInference(radius=p.propagation.radius)
    return propagate_video_liir(encode, frames, first_labels, cfg, later_labels, device)
