"""The ``hvc propagate`` stage: label propagation of the first-frame labels through every
video of a benchmark, with one frozen encoder; predictions written as the benchmark's files.
The algorithm itself is :mod:`hvc.propagation` (and :mod:`hvc.eval.parts`,
:mod:`hvc.eval.pose` for part labels and joints).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hvc.config.benchmarks import get_benchmark
from hvc.eval.readers import read_benchmark
from hvc.eval.video import Video
from hvc.io import (
    atomic_dir,
    write_json,
    write_mask,
)
from hvc.config.params import Params, propagation_for
from hvc.config.registry import load_function, method_spec
from hvc.eval.parts import propagate_parts
from hvc.eval.pose import propagate_pose, write_pose
from hvc.propagation import PropagationConfig, merged_encoder, propagate_video
from hvc.device import device_label, pick_device
from hvc.eval.encoders import encoder_method, load_encoder, semantic_features
from hvc.config.code import provenance

log = logging.getLogger(__name__)

# (frames (B, 3, H, W), backbone layer name) -> features (B, C, H/8, W/8)
Encode = Callable[[torch.Tensor, str], torch.Tensor]


def propagation_config(p: Params) -> PropagationConfig:
    """The :class:`PropagationConfig` of the propagation section."""
    q = p.propagation
    return PropagationConfig(
        temperature=q.temperature,
        topk=q.topk,
        context=q.context,
        radius=q.radius,
        query_chunk=q.query_chunk,
    )


def propagate_benchmark(
    p: Params, encoder_spec: str, benchmark: str, root: Path, out_dir: Path, merge_semantic: bool = False
) -> dict:
    """Propagate every video of a benchmark and write the predictions to ``out_dir``.

    Object and part labels (tasks ``vos``, ``parts``) become ``out_dir/<video>/<frame>.png``
    palette PNGs, joints (``pose``) ``out_dir/<video>.json``. Objects that first appear
    after frame 0 (YouTube-VOS) start from their own first annotated frame.

    Args:
        encoder_spec: see :func:`load_encoder`; ``"semantic"`` propagates with the frozen
            semantic encoder alone (the paper's MoCo baseline, Table 6); ``"authors"`` with
            the authors' released weights (``authors_checkpoint``).
        merge_semantic: merge the encoder's features with the semantic encoder's
            (the authors' infer_vos.py, TEST.MERGE).
    Returns (and writes to ``out_dir/propagation.json``) videos, frames, seconds per frame
    and the provenance (:func:`hvc.config.code.provenance`: code, versions, device).
    Raises:
        DataError: a bad frame, mask, sequence or checkpoint (the message names the file);
            every video is checked before the first one is propagated, and ``out_dir`` is
            written only when all are done.
    """
    from tqdm import tqdm

    task = get_benchmark(benchmark).task
    device = pick_device(p.device)
    method = encoder_method(encoder_spec, p)
    p = p.model_copy(update={"propagation": propagation_for(p, method)})  # the method's preset, for its encoders only
    encode = feature_function(p, encoder_spec, device, merge_semantic)
    infer = _method_inference(p, method, task)
    extras = saved_inference_modules(encoder_spec, method, encode, device) if infer is not None else None
    videos = read_benchmark(benchmark, root)
    for video in tqdm(videos, desc=f"check {benchmark}", unit="video", mininterval=2.0):
        video.check()  # every frame decoded once before any work: a bad file costs seconds
    frames_done, seconds = 0, 0.0
    with atomic_dir(out_dir) as tmp:
        for video in tqdm(videos, desc=f"propagate {benchmark}", unit="video"):
            frames = video.read_frames()
            tic = time.perf_counter()
            _propagate_video(p, task, encode, video, frames, device, tmp, infer, benchmark, extras)
            seconds += time.perf_counter() - tic
            frames_done += len(frames) - 1
        info = {
            "benchmark": benchmark,
            "encoder": encoder_spec,
            "merge_semantic": merge_semantic,
            "method": method,
            "inference": "generic" if infer is None else method_spec(method).inference,
            "videos": len(videos),
            "frames": frames_done,
            "seconds_per_frame": seconds / max(frames_done, 1),
            "provenance": provenance("propagate", method, device_label(device)),
        }
        write_json(tmp / "propagation.json", info)
    return info


def feature_function(p: Params, encoder_spec: str, device: torch.device, merge_semantic: bool = False) -> Encode:
    """``encode(x, layer)``: features of a batch of frames ``x`` (B, 3, H, W) from the encoder
    ``encoder_spec`` names (see :func:`propagate_benchmark`), merged with the semantic
    encoder's when ``merge_semantic``; (B, C, H/8, W/8) at ``layer``.

    Raises:
        DataError: a missing or malformed checkpoint (names the file).
    """
    encoder = load_encoder(encoder_spec, p.seed, p.method, p).to(device)
    encode: Encode = lambda x, layer: encoder(x, layer)  # noqa: E731
    encode.module = encoder  # type: ignore[attr-defined]  # the method's own inference may need the module
    if merge_semantic:
        encode = merged_encoder(encode, semantic_features(p, device), p.propagation.semantic_weight)
    return encode


def saved_inference_modules(encoder_spec: str, method: str, encode: Encode, device: torch.device) -> dict:
    """What the method's own inference gets besides the frames: ``"encoder"`` (the frozen
    encoder module of ``encode``, from :func:`feature_function`) and the modules its training
    saved beside ``encoder.pt`` (``<name>.pt``, loaded weights-only through
    :meth:`~hvc.methods.base.Method.load_inference_modules`; random ones for a random
    initialisation), each on ``device``.

    Args:
        encoder_spec: the ``encoder.pt`` of a trained model, or another encoder spec (see
            :func:`propagate_benchmark`; no saved modules then).
        method: the registered method whose inference gets the modules.

    Raises:
        DataError: a module file that is not a state dict or does not fit.
    """
    from hvc.io import DataError, load_torch
    from hvc.methods import get_method

    states, path = {}, Path(encoder_spec)
    if path.name == "encoder.pt" and path.is_file():
        for f in sorted(path.parent.glob("*.pt")):
            if f.name not in ("encoder.pt", "checkpoint.pt"):
                states[f.stem] = load_torch(f, "inference module", f"the {f.name} written by `hvc train`")
    try:
        modules = get_method(method).load_inference_modules(states)
    except (ValueError, RuntimeError) as e:
        raise DataError(path.parent, f"the inference modules of method {method!r} do not load: {str(e).splitlines()[0]}") from None
    return {"encoder": getattr(encode, "module", None), **{k: m.to(device) for k, m in modules.items()}}


def _method_inference(p: Params, method: str, task: str) -> Callable | None:
    """The method's own inference (its registry entry's ``inference``) when it has one,
    ``propagation.inference`` is ``method`` and the task is masks or parts; else None (the
    generic label propagation)."""
    target = method_spec(method).inference
    if target is None or p.propagation.inference != "method" or task == "pose":
        return None
    return load_function(target)


def _propagate_video(
    p: Params,
    task: str,
    encode: Encode,
    video: Video,
    frames: list[np.ndarray],
    device: torch.device,
    out: Path,
    infer: Callable | None = None,
    benchmark: str | None = None,
    extras: dict | None = None,
) -> None:
    """Propagate one video's first labels (joints for ``pose``, part or object labels
    otherwise) with the method's own inference ``infer`` or the generic label propagation,
    and write its predictions under ``out``."""
    cfg = propagation_config(p)
    common = dict(layer=p.propagation.feature_layer, device=device, bf16=p.propagation.precision == "bf16")
    if task == "pose":
        joints = propagate_pose(encode, frames, video.joints[0], cfg, **common)
        write_pose(out / f"{video.name}.json", joints)
        return
    if infer is not None:
        pred = infer(encode, frames, video.first_labels(), video.later_labels(), p, device, extras=extras, benchmark=benchmark)
    elif task == "parts":
        pred = propagate_parts(encode, frames, video.first_labels(), cfg, **common)
    else:
        pred = propagate_video(
            encode, frames, video.first_labels(), cfg, resolution=p.propagation.resolution,
            later_labels=video.later_labels(), **common,
        )  # fmt: skip
    for path, labels in zip(video.frames, pred):
        write_mask(out / video.name / f"{path.stem}.png", labels)
