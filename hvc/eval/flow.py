"""Pseudo-dynamic signals on benchmark videos against optical flow (paper §4.3.4, Table 11, Fig. 12).

The paper applies its pseudo-dynamic module F_pseudo (§3.2.2, Eq. 6) to consecutive
frames of DAVIS 2017 val and YouTube-VOS 2018 val, compares the forward and backward
signals with an off-the-shelf optical flow (RAFT, PWC-Net) by the end-point error
(Table 11: vs RAFT, DAVIS 6.52 / 5.71, YouTube-VOS 13.18 / 13.13), and shows them in the
standard flow colours (Fig. 12). In the order it runs:

1. :func:`load_hvc` rebuilds the trained model from the train stage's ``checkpoint.pt``.
2. :func:`pseudo_dynamic` gives M1 = f(F1, F2) and M2 = f(F2, F1) for frames t and t+1,
   with F1 the online predictor output of frame t and F2 the target projector output of
   frame t+1, both L2-normalised over channels: the same path as training
   (:meth:`hvc.methods.hvc.model.HVC.embed`, :func:`hvc.methods.hvc.loss.hybrid_loss`), in eval mode.
3. :func:`raft_flow` runs torchvision's RAFT (``raft_large``, ``Raft_Large_Weights.DEFAULT``).
4. :func:`endpoint_error` and :func:`angular_error` compare the two;
   :func:`table11_scores` averages them over the consecutive pairs of the videos.
5. :func:`hvc.report.pseudo_dynamic.flow_figure` draws the Fig. 12 grid.

**Our reading of the EPE (the paper does not define it).** M is a 2-channel field
L2-normalised over its channels (Eq. 6), one unit vector per feature cell of stride 8, while
RAFT's flow is in pixels of the frame. We take Table 11 literally: M is bilinearly
upsampled to the frame's size and EPE = mean over pixels of ||M(p) - flow(p)||_2, in
pixels, with channel 0 the horizontal and channel 1 the vertical component (torchvision's
flow convention; the paper does not say which channel is which). Since ||M|| <= 1,
EPE >= mean | ||flow|| - 1 |: the number mostly measures how far the frames move, not how
well M points. The published values agree with that reading: 6.5 px on DAVIS, whose
consecutive frames are 1/24 s apart, and twice that, 13 px, on YouTube-VOS, whose
validation frames are every 5th frame of the 30 fps video. :func:`table11_scores`
therefore also reports the mean flow magnitude (the EPE of a zero signal) and the
direction-only :func:`angular_error`, which says whether M points like the flow.

Direction pairing: for a pair (t, t+1), the forward signal M1 is scored against
RAFT(t → t+1) and the backward signal M2 against RAFT(t+1 → t). In Eq. 6 M1 = f(F1, F2)
takes view 1 first (motion from view 1 to view 2) and M2 = f(F2, F1) swaps them, so M2
plays the role of the flow from frame t+1 back to frame t; both signals lie on one grid
(the two frames have the same size), as do RAFT's forward and backward flows.

Not reproduced: the PWC-Net rows of Table 11 (torchvision ships no PWC-Net).

Sources: paper §3.2.2 (Eq. 6), §4.3.4, Table 11, Fig. 12; the authors' models/model.py ``Flow``;
torchvision's optical-flow models (``torchvision.models.optical_flow.raft_large``; inputs of
equal size, H and W divisible by 8, transforms ``Raft_Large_Weights.DEFAULT.transforms()``
mapping [0, 1] to [-1, 1]; the last of the returned flow predictions is the final one) and
``torchvision.utils.flow_to_image`` (the Middlebury colour wheel the paper cites as [102]).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.optical_flow import (
    Raft_Large_Weights,
    Raft_Small_Weights,
    raft_large,
    raft_small,
)

from hvc.io import DataError, load_torch, read_image
from hvc.methods import get_method
from hvc.methods.hvc.model import HVC
from hvc.config.params import Params
from hvc.propagation import preprocess

Frame = np.ndarray | str | os.PathLike  # (H, W, 3) uint8, or an image file

RAFT_MIN_SIDE = 128  # torchvision's RAFT needs H, W >= 8 * 2 * 2**(4 - 1) (its correlation pyramid)


# --------------------------------------------------------------------------- the HVC model


def load_hvc(checkpoint: str | os.PathLike[str], params: Params | None = None, device: str | torch.device = "cpu") -> HVC:
    """The full trained HVC model (online encoder + predictor, target encoder, pseudo-dynamic module).

    Args:
        checkpoint: the train stage's ``checkpoint.pt`` (a dict with the HVC state dict under
            ``"model"`` and the run's parameters under ``"params"``, see :func:`hvc.train.train`),
            or the model folder holding it.
        params: a :class:`hvc.config.params.Params` whose ``train`` section built the model, or None
            to use the parameters recorded in the checkpoint. The architecture (``proj_dim``,
            ``head``) must agree with the recorded one.
        device: where the model is put.
    Returns:
        the model in eval mode.
    Raises:
        DataError: naming the file when it is missing, not a PyTorch file, not a training
            checkpoint (e.g. ``encoder.pt``), made with another architecture than ``params``
            says, or its weights do not fit the model.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = load_torch(path, "checkpoint", "the train stage's checkpoint.pt (or its model folder)", numpy_state=True)
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("params"), dict)):
        raise DataError(
            path, "not a training checkpoint: expected the train stage's checkpoint.pt with 'model' and 'params' entries"
        )
    recorded = state["params"].get(state["params"].get("method")) or {}  # the trained method's own section
    if params is None:
        try:
            params = Params.model_validate(state["params"])
        except ValueError as e:  # pydantic's ValidationError
            raise DataError(path, f"its recorded parameters are not valid ({str(e).splitlines()[0]})") from None
    for key in ("proj_dim", "head"):  # the architecture; loss settings do not matter here
        if key in recorded and recorded[key] != getattr(params.hvc, key):
            raise DataError(path, f"made with hvc.{key} = {recorded[key]!r}, but the parameters say {getattr(params.hvc, key)!r}")
    model = get_method(params.method).build(params)
    if not isinstance(model, HVC):
        raise DataError(path, f"a model of method {params.method!r}, which has no pseudo-dynamic signal (Table 11 is HVC's)")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:2]
        raise DataError(path, f"weights do not fit the HVC model ({' '.join(first)})") from None
    return model.to(device).eval()


@torch.no_grad()
def pseudo_dynamic(
    model: HVC,
    frame_a: Frame,
    frame_b: Frame,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
    normalization: str = "imagenet",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward pseudo-dynamic signals between two frames (paper Eq. 6, §4.3.4).

    F1 = online predictor output of ``frame_a``, F2 = target projector output of
    ``frame_b``, both L2-normalised over channels (Eq. 2, :meth:`hvc.methods.hvc.model.HVC.embed`);
    M1 = F_pseudo(cat(F1, F2)), M2 = F_pseudo(cat(F2, F1)), as in :func:`hvc.methods.hvc.loss.hybrid_loss`.
    The model is put in eval mode (batch norm uses its running statistics).

    Args:
        model: a trained :class:`~hvc.methods.hvc.model.HVC` (see :func:`load_hvc`).
        frame_a, frame_b: (H, W, 3) uint8 frames of equal size, or image files.
        resolution: resize each frame so its short side has this many pixels (None: native),
            as :func:`hvc.propagation.preprocess`.
        device: where the model and frames run.
        normalization: input mean/std (``hvc.methods.hvc.views.NORMALIZATION``).
    Returns:
        (forward M1, backward M2), float32 CPU tensors (2, h, w), h x w the stride-8 feature
        grid; unit length over the 2 channels at every cell.
    Raises:
        ValueError: the two frames differ in size.
        DataError: a frame file is missing or unreadable.
    """
    a, b = _frame_pair(frame_a, frame_b)
    model = model.to(device).eval()
    xa = preprocess(a, resolution, normalization).to(device)
    xb = preprocess(b, resolution, normalization).to(device)
    f1 = F.normalize(model.predictor(model.online(xa)), dim=1)  # online prediction of frame a
    f2 = F.normalize(model.target(xb), dim=1)  # target projection of frame b
    m1, m2 = model.pseudo(f1, f2), model.pseudo(f2, f1)
    return m1[0].float().cpu(), m2[0].float().cpu()


def _frame(frame: Frame) -> np.ndarray:
    """A frame as an (H, W, 3) uint8 array; file names are read with :func:`hvc.io.read_image`."""
    if isinstance(frame, (str, os.PathLike)):
        return read_image(frame)
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 array, got {frame.dtype} {frame.shape}")
    return frame


def _frame_pair(frame_a: Frame, frame_b: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Two frames as (H, W, 3) uint8 arrays (see :func:`_frame`); ValueError when their sizes differ."""
    a, b = _frame(frame_a), _frame(frame_b)
    if a.shape != b.shape:
        raise ValueError(f"the two frames differ in size: {a.shape} vs {b.shape}")
    return a, b


# --------------------------------------------------------------------------- RAFT


@functools.lru_cache(maxsize=2)
def load_raft(weights: Raft_Large_Weights | Raft_Small_Weights | None = Raft_Large_Weights.DEFAULT, device: str = "cpu") -> nn.Module:
    """torchvision's RAFT in eval mode: ``raft_small`` for ``Raft_Small_Weights``, else ``raft_large``.

    The weights are downloaded into torch's hub cache on first use; ``weights=None`` gives
    a randomly initialised ``raft_large`` (tests). Cached per (weights, device).

    Raises:
        RuntimeError: the weights are not cached and cannot be downloaded; the message says
            where to put the file.
    """
    build = raft_small if isinstance(weights, Raft_Small_Weights) else raft_large
    try:
        model = build(weights=weights, progress=False)
    except OSError as e:  # URLError is an OSError
        if weights is None:
            raise
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise RuntimeError(f"cannot download the RAFT weights {weights.url} ({e}); place the file at {target}") from None
    return model.to(device).eval()


@torch.no_grad()
def raft_flow(
    frame_a: Frame,
    frame_b: Frame,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    weights: Raft_Large_Weights | Raft_Small_Weights | None = Raft_Large_Weights.DEFAULT,
    resolution: int | None = None,
    num_flow_updates: int = 12,
) -> torch.Tensor:
    """Optical flow from ``frame_a`` to ``frame_b`` by RAFT (torchvision), in pixels of the frames.

    The frames go through the weights' transforms (``OpticalFlow``: float in [-1, 1]),
    are optionally resized (short side ``resolution``, and at least ``RAFT_MIN_SIDE`` =
    128 pixels, the smallest input torchvision's RAFT accepts) and padded by edge replication,
    half on each side, to multiples of 8 (RAFT's requirement; the padding of the original
    RAFT code's ``InputPadder``); the last flow prediction is cropped back, resized to the
    frame's size and rescaled so its vectors are in pixels of the original frame.

    Args:
        frame_a, frame_b: (H, W, 3) uint8 frames of equal size, or image files.
        model: a RAFT model (e.g. ``raft_small(weights=None)`` in tests); it is moved to
            ``device`` and put in eval mode. None: :func:`load_raft` with ``weights``.
        device: where RAFT runs.
        weights: the torchvision weights used when ``model`` is None.
        resolution: run RAFT with the short side resized to this many pixels (None: native);
            raised to 128 when smaller.
        num_flow_updates: RAFT's refinement iterations (torchvision's default, 12).
    Returns:
        (2, H, W) float32 CPU tensor: channel 0 horizontal (x, to the right), channel 1
        vertical (y, down), in pixels; frame_a's pixel p moves to p + flow(p) in frame_b.
    Raises:
        ValueError: the two frames differ in size.
        DataError: a frame file is missing or unreadable.
    """
    a, b = _frame_pair(frame_a, frame_b)
    if model is None:
        model = load_raft(weights, str(device))
    model = model.to(device).eval()
    H, W = a.shape[:2]
    img1, img2 = Raft_Large_Weights.DEFAULT.transforms()(*(torch.from_numpy(np.array(x)).permute(2, 0, 1)[None] for x in (a, b)))
    short = max(resolution or min(H, W), RAFT_MIN_SIDE)
    h, w = (H, W) if short == min(H, W) else (round(H * short / min(H, W)), round(W * short / min(H, W)))
    if (h, w) != (H, W):
        img1, img2 = (F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True) for x in (img1, img2))
    ph, pw = (-h) % 8, (-w) % 8
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
    img1, img2 = (F.pad(x, pad, mode="replicate").to(device) for x in (img1, img2))
    flow = model(img1, img2, num_flow_updates=num_flow_updates)[-1].float().cpu()
    flow = flow[:, :, pad[2] : pad[2] + h, pad[0] : pad[0] + w]
    if (h, w) != (H, W):
        flow = F.interpolate(flow, (H, W), mode="bilinear", align_corners=False)
        flow = flow * torch.tensor([W / w, H / h]).view(1, 2, 1, 1)
    return flow[0]


# --------------------------------------------------------------------------- errors


def _upsampled(signal: Any, flow: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal bilinearly resized to the flow's size, flow), both float64 (2, H, W)."""
    s = torch.as_tensor(signal).double()
    f = torch.as_tensor(flow).double()
    if s.ndim != 3 or s.shape[0] != 2 or f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"expected (2, h, w) signal and (2, H, W) flow, got {tuple(s.shape)} and {tuple(f.shape)}")
    if s.shape[1:] != f.shape[1:]:
        s = F.interpolate(s[None], f.shape[1:], mode="bilinear", align_corners=False)[0]
    return s, f


def endpoint_error(signal: Any, flow: Any) -> float:
    """End-point error of a pseudo-dynamic signal against a flow, in pixels (our reading of Table 11).

    The signal (2, h, w) is bilinearly upsampled to the flow's (H, W) (cell centres at
    stride-8 positions, ``align_corners=False``); EPE = mean over the H x W pixels of the
    Euclidean norm of signal - flow. The signal is not rescaled: see the module docstring.

    Args:
        signal: (2, h, w) tensor or array (e.g. M1 of :func:`pseudo_dynamic`).
        flow: (2, H, W) flow in pixels (channel 0 horizontal, 1 vertical).
    Raises:
        ValueError: the shapes are not (2, h, w) and (2, H, W).
    """
    s, f = _upsampled(signal, flow)
    return float(torch.linalg.vector_norm(s - f, dim=0).mean())


def angular_error(signal: Any, flow: Any, min_flow: float = 0.0) -> float:
    """Mean angle between the signal's and the flow's vectors, in degrees (direction only).

    The signal is upsampled as in :func:`endpoint_error`; at each pixel the angle is
    atan2(|s x f|, s . f), in [0, 180]. Pixels where the flow is no longer than
    ``min_flow`` pixels (its direction is undefined, or noise) or the signal is zero are
    left out. This is not the Barron et al. angular error of (u, v, 1) vectors, which
    mixes in the magnitude.

    Returns:
        the mean angle, or NaN when no pixel is left.
    Raises:
        ValueError: the shapes are not (2, h, w) and (2, H, W).
    """
    s, f = _upsampled(signal, flow)
    cross = s[0] * f[1] - s[1] * f[0]
    dot = (s * f).sum(0)
    valid = (torch.linalg.vector_norm(f, dim=0) > min_flow) & (torch.linalg.vector_norm(s, dim=0) > 1e-12)
    if not valid.any():
        return float("nan")
    return float(torch.rad2deg(torch.atan2(cross.abs(), dot))[valid].mean())


def table11_scores(
    model: HVC,
    videos_frames: Iterable[Sequence[Frame]],
    raft: nn.Module | None,
    max_pairs: int | None = None,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
    normalization: str = "imagenet",
    raft_resolution: int | None = None,
    angle_min_flow: float = 1.0,
) -> dict[str, float | int]:
    """Table 11: EPE (and angle) of the pseudo-dynamic signals against RAFT on benchmark videos.

    For every consecutive pair (t, t+1) of every video, :func:`pseudo_dynamic` gives M1, M2;
    M1 is scored against RAFT(t → t+1) and M2 against RAFT(t+1 → t) (the pairing is argued
    in the module docstring). Each pair's errors are means over its pixels at the frame's
    full size; the scores are means over all pairs, videos pooled (the paper does not say
    how it averages; with frames of one size this equals the mean over all pixels).

    Args:
        model: trained HVC (:func:`load_hvc`).
        videos_frames: one sequence of frames per video, in temporal order, each an
            (H, W, 3) uint8 array or an image file (read when needed), e.g.
            ``[v.frames for v in read_benchmark("davis2017", root)]``.
        raft: a RAFT model, or None for :func:`load_raft` (``Raft_Large_Weights.DEFAULT``).
        max_pairs: stop after this many pairs in all (None: every pair).
        resolution, normalization: the HVC input (see :func:`pseudo_dynamic`).
        raft_resolution: RAFT's input short side (None: native; see :func:`raft_flow`).
        device: where both networks run.
        angle_min_flow: pixels whose RAFT flow is at most this long (pixels) are left out of
            the angles (their direction is noise).
    Returns:
        ``forward_epe``, ``backward_epe`` (pixels), ``forward_angle``, ``backward_angle``
        (degrees; NaN-pairs skipped), ``forward_flow_norm``, ``backward_flow_norm`` (mean
        RAFT flow length in pixels: the EPE a zero signal would get), and ``pairs``.
    Raises:
        ValueError: no video has two frames.
        DataError: a frame file is missing or unreadable.
    """
    sums = {k: [] for k in ("forward_epe", "backward_epe", "forward_angle", "backward_angle", "forward_flow_norm", "backward_flow_norm")}
    pairs = 0
    for frames in videos_frames:
        if max_pairs is not None and pairs >= max_pairs:
            break
        b = None
        for t in range(len(frames) - 1):
            if max_pairs is not None and pairs >= max_pairs:
                break
            a = _frame(frames[t]) if b is None else b
            b = _frame(frames[t + 1])
            m1, m2 = pseudo_dynamic(model, a, b, resolution, device, normalization)
            fwd = raft_flow(a, b, raft, device, resolution=raft_resolution)
            bwd = raft_flow(b, a, raft, device, resolution=raft_resolution)
            _add_pair_scores(sums, (("forward", m1, fwd), ("backward", m2, bwd)), angle_min_flow)
            pairs += 1
    if pairs == 0:
        raise ValueError("no frame pair to score: every video has fewer than two frames")
    out: dict[str, float | int] = {k: _finite_mean(v) for k, v in sums.items()}
    out["pairs"] = pairs
    return out


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else float("nan")


def _add_pair_scores(sums: dict[str, list[float]], signals, angle_min_flow: float) -> None:
    """Append one pair's EPE, angle and RAFT flow length to ``sums`` for each (direction
    name, (2, H, W) signal, (2, H, W) RAFT flow) of ``signals`` (see :func:`table11_scores`)."""
    for name, m, flow in signals:
        sums[f"{name}_epe"].append(endpoint_error(m, flow))
        sums[f"{name}_angle"].append(angular_error(m, flow, angle_min_flow))
        sums[f"{name}_flow_norm"].append(float(torch.linalg.vector_norm(flow.double(), dim=0).mean()))
