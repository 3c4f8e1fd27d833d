"""Benchmark runs: load an encoder, propagate every video, score the predictions.

``propagate_benchmark`` and ``evaluate_benchmark`` are the bodies of the ``hvc propagate``
and ``hvc evaluate`` stages; the method itself lives in :mod:`hvc.propagation` and
:mod:`hvc.metrics`.
"""

from __future__ import annotations

import logging
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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(path, "encoder checkpoint not found") from None
    except Exception as e:  # torch raises several types for truncated/foreign files
        raise DataError(path, f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict, found {type(state).__name__}")
    try:
        return build_encoder_for_propagation(state)
    except (ValueError, RuntimeError) as e:
        raise DataError(path, str(e)) from None


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
        DataError: a bad frame, mask, sequence or checkpoint (the message names the file).
    """
    from tqdm import tqdm

    device = pick_device(p.device)
    encoder = load_encoder(encoder_spec, p.seed).to(device)
    cfg = propagation_config(p)
    videos = read_benchmark(benchmark, root)
    frames_done, seconds = 0, 0.0
    with atomic_dir(out_dir) as tmp:
        for video in tqdm(videos, desc=f"propagate {benchmark}", unit="video"):
            frames = video.read_frames()
            first = video.first_labels()
            for i, f in enumerate(frames):
                if f.shape[:2] != first.shape:
                    raise DataError(video.frames[i], f"frame is {f.shape[1]}x{f.shape[0]}, mask {first.shape[1]}x{first.shape[0]}")
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

