"""Benchmark runs: load an encoder, propagate every video, score the predictions.

``propagate_benchmark`` and ``evaluate_benchmark`` are the bodies of the ``hvc propagate``
and ``hvc evaluate`` stages; the method itself lives in :mod:`hvc.propagation` and
:mod:`hvc.metrics`.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import torch

from hvc.benchmarks import read_benchmark
from hvc.io import DataError, atomic_dir, write_json, write_mask
from hvc.metrics import evaluate_folder
from hvc.model import Backbone, build_encoder_for_propagation
from hvc.params import Params
from hvc.propagation import PropagationConfig, propagate_video
from hvc.train import pick_device

log = logging.getLogger(__name__)


def load_encoder(spec: str, seed: int = 0) -> Backbone:
    """The frozen encoder named by ``spec``.

    Args:
        spec: path of an ``encoder.pt`` (backbone state dict written by the train stage);
            ``"random"``: a randomly initialised backbone (seeded by ``seed``);
            ``"imagenet"``: torchvision's ImageNet-supervised ResNet-18 weights (downloaded
            to the torch hub cache on first use) in the stride-8 backbone.
    Raises:
        DataError: the file is missing, truncated, or holds another model's weights.
    """
    if spec == "random":
        torch.manual_seed(seed)
        return build_encoder_for_propagation(None)
    if spec == "imagenet":
        from torchvision.models import ResNet18_Weights, resnet18

        state = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).state_dict()
        renamed = {}
        for k, v in state.items():
            if k.startswith("fc."):
                continue
            k = k.replace("conv1.", "stem.0.", 1) if k.startswith("conv1.") else k
            k = k.replace("bn1.", "stem.1.", 1) if k.startswith("bn1.") else k
            renamed[k] = v
        return build_encoder_for_propagation(renamed)
    path = Path(spec)
    if path.is_dir():
        raise DataError(path, "is a folder; pass its encoder.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(path, "encoder checkpoint not found") from None
    except pickle.UnpicklingError:  # refused by weights_only (Python objects inside), or not a pickle at all
        hint = " (checkpoint.pt is the training state)" if path.name == "checkpoint.pt" else ""
        raise DataError(
            path, f"not a plain PyTorch state dict of tensors{hint}; pass the encoder.pt written by `hvc train`"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises several types for truncated and foreign files
        raise DataError(path, f"truncated or not a PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict, found {type(state).__name__}")
    _check_backbone_state(path, state)
    try:
        return build_encoder_for_propagation(state)
    except (ValueError, RuntimeError) as e:
        raise DataError(path, _first_line(e)) from None


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters (torch's run long)."""
    line = (str(e).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_backbone_state(path: Path, state: dict) -> None:
    """Compare a state dict with the HVC ResNet-18 backbone's keys and shapes.

    Raises:
        DataError: one line saying how the checkpoint differs (missing, unexpected and
            reshaped keys, with an example of each), e.g. for a ResNet-50 or a full
            training checkpoint.
    """
    if {"model", "optimizer", "step"} <= set(state):
        raise DataError(path, "is a full training checkpoint (checkpoint.pt); pass encoder.pt from the same folder")
    with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
        expected = {k: tuple(v.shape) for k, v in Backbone().state_dict().items()}
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k] != expected[k]]
    if not (missing or unexpected or reshaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        shapes = f"{list(found[k] or [])} here, {list(expected[k])} in HVC"
        parts.append(f"{len(reshaped)} keys of another shape (e.g. {k}: {shapes})")
    raise DataError(
        path,
        f"holds another model's weights, not the HVC ResNet-18 backbone: {', '.join(parts)}; "
        "pass the encoder.pt written by `hvc train`",
    )


def propagation_config(p: Params) -> PropagationConfig:
    """The :class:`PropagationConfig` of the propagation section."""
    q = p.propagation
    return PropagationConfig(
        temperature=q.temperature,
        topk=q.topk,
        context=q.context,
        radius=q.radius,
        keep_first=q.keep_first,
        query_chunk=q.query_chunk,
    )


def propagate_benchmark(p: Params, encoder_spec: str, benchmark: str, root: Path, out_dir: Path) -> dict:
    """Propagate every video of a benchmark and write ``out_dir/<seq>/<frame>.png``.

    Returns (and writes to ``out_dir/propagation.json``) videos, frames and seconds per frame.
    Raises:
        DataError: a bad frame, mask, sequence or checkpoint (the message names the file);
            every video is checked (:meth:`~hvc.benchmarks.Video.check`) before the first
            one is propagated, and ``out_dir`` is written only when all are done.
    """
    from tqdm import tqdm

    device = pick_device(p.device)
    encoder = load_encoder(encoder_spec, p.seed).to(device)
    cfg = propagation_config(p)
    videos = read_benchmark(benchmark, root)
    for video in tqdm(videos, desc=f"check {benchmark}", unit="video", mininterval=2.0):
        video.check()  # every frame decoded once before any work: a bad file costs seconds
    frames_done, seconds = 0, 0.0
    with atomic_dir(out_dir) as tmp:
        for video in tqdm(videos, desc=f"propagate {benchmark}", unit="video"):
            frames = video.read_frames()
            first = video.first_labels()
            tic = time.perf_counter()
            pred = propagate_video(
                lambda x, layer: encoder(x, layer),
                frames,
                first,
                cfg,
                resolution=p.propagation.resolution,
                layer=p.propagation.feature_layer,
                device=device,
                bf16=p.propagation.precision == "bf16",
            )
            seconds += time.perf_counter() - tic
            frames_done += len(frames) - 1
            for path, labels in zip(video.frames, pred):
                write_mask(tmp / video.name / f"{path.stem}.png", labels)
        info = {
            "benchmark": benchmark,
            "encoder": encoder_spec,
            "videos": len(videos),
            "frames": frames_done,
            "seconds_per_frame": seconds / max(frames_done, 1),
        }
        write_json(tmp / "propagation.json", info)
    return info


def evaluate_benchmark(p: Params, benchmark: str, root: Path, predictions: Path, out: Path | None) -> tuple[dict, dict]:
    """J&F of a benchmark's predictions (DAVIS definitions, :mod:`hvc.metrics`).

    Returns (summary, per-object table), fractions in [0, 1]. When ``out`` is given, writes
    the per-object table to ``<out stem>.objects.json`` and then the summary to ``out``.
    """
    videos = read_benchmark(benchmark, root)
    gt_root = Path(root) / "Annotations" / "480p"
    scores = evaluate_folder(gt_root, predictions, [v.name for v in videos], bound_th=p.eval.bound_th)
    per_object = scores.pop("per_object")
    if out is not None:
        write_json(out.with_name(out.stem + ".objects.json"), per_object)
        write_json(out, scores)
    return scores, per_object

