"""LIIR's own label propagation (its inference in the harness: :func:`propagate`).

Li et al., CVPR 2022, §3.3 and §3.2 ("we replace A with Ã during inference"); the numbers
where the paper is silent from github.com/shasha521/LIIR_pytorch (evaluate_davis.py,
models/colorizer_momen.py, models/mast_momen.py), as MAST does it:

* reference frames I_0, I_5, I_{t-5}, I_{t-3}, I_{t-1} (those before t; [P] §3.3);
* frames zero-padded (in the encoder's normalised Lab) to multiples of the stride 4
  (:func:`hvc.methods.liir.model.pad_to_stride`, evaluate_davis.py ``pad_divisible``);
* features at stride 4 (64-d post-conv), raw dot products, no temperature (Eq. 1), each
  reference searched in a square window of radius R = 14 feature cells at 480p
  (mast_momen.py ``self.R = 14`` at test), i.e. 56 pixels; at another resolution the
  radius is scaled to cover the same part of the frame (:meth:`LIIRInference.radius_at`);
  window cells outside the frame take part with dot product 0 and label 0 (the code's
  correlation sampler and ``F.unfold(padding=R)``), or are masked out (``border="mask"``);
* one softmax over the windows of all references (colorizer_momen.py ``F.softmax`` over
  the concatenated correlations);
* the compact affinity Ã (Eq. 7) for each reference's window separately (colorizer_momen.py
  reshapes the joint affinity to (references, window) before ``topk``): where the window's
  top value exceeds 0.1 it is replaced by a mixture of two Gaussians (FWHM 1 cell, weights =
  softmax of the two top values) at its two highest cells; ``compaction="joint"`` takes
  the two peaks over the joint row of all references instead;
* labels of each reference (one-hot, the first annotation or the earlier prediction, both
  at the padded size) taken every 4th pixel onto the feature grid, copied by the affinity,
  foreground channels × 1.05, upsampled bilinearly to the padded frame, arg-maxed and
  cropped.

The window products of all references are one batch of matrix products
(:func:`hvc.methods.liir.window.window_correlation`).
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
from hvc.methods.liir.loss import compact_affinity, window_gaussians, window_size
from hvc.methods.liir.window import window_correlation

_DEFAULT = LIIRConfig()
COMPACTIONS = ("reference", "joint")
BORDERS = ("zero", "mask")


@dataclass(frozen=True)
class LIIRInference:
    """LIIR's inference settings (defaults: :class:`hvc.methods.liir.config.LIIRConfig`).

    Attributes:
        references: reference frames; non-negative entries are absolute frame indices,
            negative ones are relative to the current frame t (0, 5, -5, -3, -1).
        radius: window radius R per reference, feature cells, at frames whose short side is
            ``radius_size`` pixels (14 cells at stride 4 at 480p: 56 pixels).
        radius_size: short side, pixels, at which ``radius`` holds (480, [U] evaluate_davis.py
            evaluates DAVIS at 480p); None keeps ``radius`` cells at every resolution.
        stride: feature stride, input pixels per cell (4); labels are sampled every
            ``stride`` pixels.
        compact_threshold: windows whose top affinity exceeds this use Ã (0.1).
        peaks: Gaussians of Ã (2).
        fwhm: full width at half maximum of each Gaussian, cells (1).
        foreground_gain: factor on the foreground label channels (1.05).
        compaction: "reference": Ã per reference window ([U] colorizer_momen.py);
            "joint": the peaks over the joint row of all references.
        border: "zero": window cells outside the frame count with dot product 0 and
            label 0 ([U]); "mask": they are left out of the softmax.
    Raises:
        ValueError: an unknown ``compaction`` or ``border``, or a radius below 0.
    """

    references: tuple[int, ...] = _DEFAULT.test_references
    radius: int = _DEFAULT.test_radius
    radius_size: int | None = _DEFAULT.test_radius_size
    stride: int = _DEFAULT.label_stride
    compact_threshold: float = _DEFAULT.compact_test_threshold
    peaks: int = _DEFAULT.compact_peaks
    fwhm: float = _DEFAULT.compact_fwhm
    foreground_gain: float = _DEFAULT.test_foreground_gain
    compaction: str = "reference"
    border: str = "zero"

    def __post_init__(self) -> None:
        if self.compaction not in COMPACTIONS or self.border not in BORDERS:
            raise ValueError(f"compaction must be one of {COMPACTIONS} and border one of {BORDERS}, got {self.compaction!r}, {self.border!r}")
        if self.radius < 0:
            raise ValueError(f"window radius must be >= 0, got {self.radius}")

    def radius_at(self, height: int, width: int) -> int:
        """Window radius, feature cells, for frames of ``height`` × ``width`` pixels: the
        same share of the frame as ``radius`` at a short side of ``radius_size``,
        ``max(1, round(radius · min(height, width) / radius_size))`` (14 at 480p, 2 at 60
        pixels); ``radius`` itself when ``radius_size`` is None."""
        if self.radius_size is None:
            return self.radius
        return max(1, round(self.radius * min(height, width) / self.radius_size))

    def reference_frames(self, t: int) -> list[int]:
        """The distinct reference frames of frame t (> 0), in order, all in [0, t)."""
        out: list[int] = []
        for r in self.references:
            i = r if r >= 0 else t + r
            if 0 <= i < t and i not in out:
                out.append(i)
        return out


def joint_compact_affinity(affinity: torch.Tensor, cells: int, peaks: int = 2, fwhm: float = 1.0, threshold: float = 0.1) -> torch.Tensor:
    """Ã over the concatenated windows of several references, the peaks searched over the
    whole row (``compaction="joint"``; Eq. 7 with the code's fixed Gaussians, as
    :func:`hvc.methods.liir.loss.compact_target`): for each row whose top value exceeds
    ``threshold``, Σ_m ω_m exp(-4 ln 2 · d²/fwhm²) over the window of the reference holding
    peak m, ω = softmax of the ``peaks`` top values; other rows unchanged.

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


def reference_compact_affinity(
    affinity: torch.Tensor, radius: int, peaks: int = 2, fwhm: float = 1.0, threshold: float = 0.1, chunk: int = 4096
) -> torch.Tensor:
    """Ã for each reference's window separately ([U] colorizer_momen.py, inference branch:
    the jointly normalised affinity reshaped to (references, window), ``topk`` and the
    ``> 0.1`` test per window): the numbers of :func:`hvc.methods.liir.loss.compact_affinity`
    on every (query cell, reference) window, the Gaussians computed only for the windows that
    are replaced, ``chunk`` windows at a time (bounds memory).

    Args:
        affinity: (N, K, P²) affinity of N query cells to K reference windows (rows of the
            joint softmax over all K·P² cells).
    Returns:
        (N, K, P²): windows whose top value exceeds ``threshold`` replaced by their Ã.
    Raises:
        ValueError: the last axis is not P² for ``radius``, or ``peaks`` out of range.
    """
    p = window_size(radius)
    if affinity.shape[-1] != p * p or not 1 <= peaks <= p * p:
        raise ValueError(f"affinity windows of {affinity.shape[-1]} cells and {peaks} peaks do not fit radius {radius}")
    values, index = torch.topk(affinity, peaks, dim=-1)
    rows = (values[..., 0] > threshold).nonzero(as_tuple=True)
    out = affinity.clone()
    for i in range(0, len(rows[0]), chunk):
        sel = tuple(r[i : i + chunk] for r in rows)
        bumps = window_gaussians(index[sel], p, fwhm, affinity.dtype)  # (n, M, P²)
        out[sel] = (values[sel].softmax(dim=-1)[..., None] * bumps).sum(dim=-2)
    return out


def copy_labels(affinity: torch.Tensor, labels: torch.Tensor, radius: int) -> torch.Tensor:
    """Ŷ(i) = Σ_k Σ_j A(i, k, j) Y_k(i + offset_j): the references' labels weighted by the
    affinity (Eq. 2 over several references; outside the frame labels are 0, the code's
    ``F.unfold(padding=R)``), one window row at a time (no unfolded copy of all the labels).

    Args:
        affinity: (h·w, K, P²) affinity (window cell j = (dy + R)·P + (dx + R)).
        labels: (K, L, h, w) labels of the K references on the feature grid.
        radius: R.
    Returns:
        (L, h, w) copied labels.
    Raises:
        ValueError: sizes disagree.
    """
    k, num, h, w = labels.shape
    p = window_size(radius)
    if affinity.shape != (h * w, k, p * p):
        raise ValueError(f"affinity {tuple(affinity.shape)} does not fit labels {tuple(labels.shape)} with radius {radius}")
    padded = F.pad(labels, (radius, radius, radius, radius))
    weights = affinity.view(h, w, k, p, p)
    out = labels.new_zeros(num, h, w)
    for ky in range(p):
        row = padded[:, :, ky : ky + h].unfold(3, p, 1)  # (K, L, h, w, P): the window row ky of every cell
        out += torch.einsum("hwkp,klhwp->lhw", weights[:, :, :, ky], row)
    return out


def _onehot_grid(labels: np.ndarray, num: int, stride: int, device: torch.device) -> torch.Tensor:
    """(Hp, Wp) label map of the padded frame → (1, num + 1, Hp/s, Wp/s) one-hot sampled
    every ``stride`` pixels ([U] colorizer_momen.py ``prep``: ``image[:, :, ::D, ::D]``)."""
    return labels_to_onehot(labels[::stride, ::stride], num).to(device)[None]


def _feature_fn(encoder, hw: tuple[int, int], device: torch.device | str):
    """frame (H, W, 3) uint8 → (1, C, h, w) features; the encoder pads the frame to its stride.

    Raises:
        ValueError: features not of size ``hw`` (the padded frame at the stride).
    """

    def features(frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1)[None]  # a writable copy
        f = encoder(normalize_input(x, "imagenet").to(device), "layer3").float()
        if tuple(f.shape[-2:]) != hw:
            raise ValueError(f"features {tuple(f.shape[-2:])} of a {tuple(frame.shape[:2])} frame are not its padded size at the stride: {hw}")
        return f

    return features


def reference_affinity(query: torch.Tensor, refs: torch.Tensor, radius: int, border: str = "zero") -> torch.Tensor:
    """The joint affinity of a query frame to its references' windows: raw dot products
    (Eq. 1, no temperature), one softmax over the windows of all references.

    Args:
        query: (1, C, h, w) features of the query frame.
        refs: (K, C, h, w) features of its K reference frames.
        radius: R, feature cells.
        border: "zero" (cells outside the frame: dot product 0, [U]) or "mask" (left out).
    Returns:
        (h·w, K, P²), each row summing to 1 over its K·P² cells.
    """
    k, _, h, w = refs.shape
    p = window_size(radius)
    logits = window_correlation(query.expand(k, -1, -1, -1), refs, radius).transpose(0, 1)  # (h·w, K, P²)
    if border == "mask":
        inside = F.unfold(torch.ones(1, 1, h, w, device=refs.device), p, padding=radius)[0].t() > 0.5  # (h·w, P²)
        logits = logits.masked_fill(~inside[:, None, :], float("-inf"))
    return logits.reshape(h * w, k * p * p).softmax(-1).view(h * w, k, p * p)


def _predict_frame(query: torch.Tensor, refs: list[tuple[torch.Tensor, torch.Tensor]], cfg: LIIRInference, radius: int) -> torch.Tensor:
    """Soft labels (1, L, h, w) of one frame from its reference frames' (features (1, C, h, w),
    one-hot labels (1, L, h, w)): the joint affinity (:func:`reference_affinity`), Ã per
    reference window (or over the joint row), then each window's labels weighted by it."""
    feats = torch.cat([f for f, _ in refs])
    labels = torch.cat([lab for _, lab in refs])
    aff = reference_affinity(query, feats, radius, cfg.border)
    n, k, cells = aff.shape
    if cfg.compaction == "reference":
        aff = reference_compact_affinity(aff, radius, cfg.peaks, cfg.fwhm, cfg.compact_threshold)
    else:
        aff = joint_compact_affinity(aff.view(n, k * cells), cells, cfg.peaks, cfg.fwhm, cfg.compact_threshold).view(n, k, cells)
    return copy_labels(aff, labels, radius)[None]


@torch.no_grad()
def propagate_video_liir(
    encoder,
    frames: list[np.ndarray],
    first_labels: np.ndarray,
    cfg: LIIRInference | None = None,
    later_labels: dict[int, np.ndarray] | None = None,
    device: torch.device | str = "cpu",
    soft: list[torch.Tensor] | None = None,
) -> np.ndarray:
    """Propagate first-frame labels through a video with LIIR's inference (module docstring).

    Args:
        encoder: ``encoder(x, layer)``: (1, 3, H, W) ImageNet-normalised RGB → (1, C, ⌈H/s⌉,
            ⌈W/s⌉) features of the frame padded to the stride ``s`` (the harness's
            propagation interface; a LIIR ``encoder.pt`` is fed Lab inside,
            :class:`hvc.eval.encoders.Renormalized`, and pads inside,
            :func:`hvc.methods.liir.model.pad_to_stride`).
        frames: T frames (H, W, 3) uint8 at the evaluated resolution ([U] evaluate_davis.py:
            480p; the window radius is scaled to it, :meth:`LIIRInference.radius_at`).
        first_labels: (H, W) uint8 labels of frame 0 (0 = background).
        later_labels: {t: (H, W)} labels of objects first annotated at frame t > 0
            (YouTube-VOS): pasted over the prediction of frame t, then propagated.
        soft: when a list, each frame's soft labels (1, L, h, w) (before the foreground gain)
            are appended to it (for comparisons with other implementations).
    Returns:
        (T, H, W) uint8 label maps; frame 0 is the annotation.
    Raises:
        ValueError: empty first annotation, sizes that differ, or features that are not the
            padded frame at ``cfg.stride``.
    """
    cfg = cfg or LIIRInference()
    later_labels = later_labels or {}
    H, W = first_labels.shape
    num = video_objects(frames, first_labels, later_labels)
    s = cfg.stride
    Hp, Wp = -(-H // s) * s, -(-W // s) * s
    radius = cfg.radius_at(H, W)
    features = _feature_fn(encoder, (Hp // s, Wp // s), device)
    feats = [features(frames[0])]
    labels = [_onehot_grid(np.pad(first_labels, ((0, Hp - H), (0, Wp - W))), num, s, device)]
    out = np.zeros((len(frames), H, W), np.uint8)
    out[0] = first_labels
    gain = torch.tensor([1.0] + [cfg.foreground_gain] * num, device=device).view(1, -1, 1, 1)
    for t in range(1, len(frames)):
        feats.append(features(frames[t]))
        pred = _predict_frame(feats[t], [(feats[i], labels[i]) for i in cfg.reference_frames(t)], cfg, radius)
        if soft is not None:
            soft.append(pred)
        full = F.interpolate(pred * gain, size=(Hp, Wp), mode="bilinear", align_corners=False)[0].argmax(0).to(torch.uint8).cpu().numpy()
        if t in later_labels:
            full[:H, :W] = np.where(later_labels[t] > 0, later_labels[t], full[:H, :W])
        out[t] = full[:H, :W]
        labels.append(_onehot_grid(full, num, s, device))  # the padded prediction, as [U] evaluate_davis.py keeps it
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
