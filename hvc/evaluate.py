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

from hvc.benchmarks import get_benchmark, read_benchmark
from hvc.io import (
    DataError,
    atomic_dir,
    first_line,
    load_torch,
    state_dict_differences,
    write_json,
    write_mask,
)
from hvc.metrics import evaluate_folder, evaluate_vost_folder
from hvc.model import Backbone, backbone_key, backbone_shapes, build_encoder_for_propagation
from hvc.params import Params, ParamsError
from hvc.parts import evaluate_parts, propagate_parts
from hvc.pose import evaluate_pose, propagate_pose, read_pose, write_pose
from hvc.propagation import PropagationConfig, merged_encoder, propagate_video
from hvc.released import load_authors_encoder
from hvc.semantic import load_semantic_encoder
from hvc.submission import read_server_scores
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
        DataError: the file is missing, truncated, or holds another model's weights; for
            ``"imagenet"``, naming the torch hub cache file, when the weights are neither
            cached nor downloadable (no network) or the download is corrupt.
    """
    if spec == "random":
        torch.manual_seed(seed)
        return build_encoder_for_propagation(None)
    if spec == "imagenet":
        state = _imagenet_resnet18_state()
        return build_encoder_for_propagation({backbone_key(k): v for k, v in state.items() if not k.startswith("fc.")})
    path = Path(spec)
    hint = " (checkpoint.pt is the training state)" if path.name == "checkpoint.pt" else ""
    state = load_torch(path, "encoder checkpoint", "the encoder.pt written by `hvc train`", hint)
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict, found {type(state).__name__}")
    _check_backbone_state(path, state)
    try:
        return build_encoder_for_propagation(state)
    except (ValueError, RuntimeError) as e:
        raise DataError(path, first_line(e)) from None


def _imagenet_resnet18_state() -> dict:
    """torchvision's ImageNet ResNet-18 state dict (IMAGENET1K_V1), from the torch hub
    cache or downloaded into it; a DataError naming the cache file when that fails."""
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    try:
        return resnet18(weights=weights).state_dict()
    except Exception as e:  # noqa: BLE001 - URLError, OSError, RuntimeError (hash), EOFError...
        raise DataError(
            cached,
            f"ImageNet ResNet-18 weights unavailable ({type(e).__name__}: {first_line(e)}); without network, "
            f"download {weights.url} elsewhere and put it here",
        ) from None


def _check_backbone_state(path: Path, state: dict) -> None:
    """Compare a state dict with the HVC ResNet-18 backbone's keys and shapes.

    Raises:
        DataError: one line saying how the checkpoint differs (missing, unexpected and
            reshaped keys, with an example of each), e.g. for a ResNet-50 or a full
            training checkpoint.
    """
    if {"model", "optimizer", "step"} <= set(state):
        raise DataError(path, "is a full training checkpoint (checkpoint.pt); pass encoder.pt from the same folder")
    differences = state_dict_differences(state, backbone_shapes(), "HVC")
    if not differences:
        return
    raise DataError(
        path,
        f"holds another model's weights, not the HVC ResNet-18 backbone: {differences}; "
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
        query_chunk=q.query_chunk,
    )


def semantic_features(p: Params, device: torch.device):
    """The frozen semantic encoder of ``propagation.semantic_checkpoint``: (1, 3, h, w) →
    (1, 1024, h/8, w/8) for :func:`hvc.propagation.merged_encoder`.

    Raises:
        ParamsError: ``propagation.semantic_checkpoint`` is not set.
        DataError: the checkpoint is missing or not a MoCo/ResNet-50 checkpoint.
    """
    if p.propagation.semantic_checkpoint is None:
        raise ParamsError("the semantic encoder needs propagation.semantic_checkpoint (a MoCo-v1 ResNet-50 checkpoint)")
    return load_semantic_encoder(Path(p.propagation.semantic_checkpoint)).to(device)


def authors_encoder(p: Params) -> Backbone:
    """Our backbone with the authors' released weights of ``authors_checkpoint``.

    Raises:
        ParamsError: ``authors_checkpoint`` is not set.
        DataError: the file is missing or not an official HVC checkpoint.
    """
    if p.authors_checkpoint is None:
        raise ParamsError("the authors' weights need authors_checkpoint (the official hvc.pth)")
    return load_authors_encoder(Path(p.authors_checkpoint), p.propagation.feature_layer)


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
    Returns (and writes to ``out_dir/propagation.json``) videos, frames and seconds per frame.
    Raises:
        DataError: a bad frame, mask, sequence or checkpoint (the message names the file);
            every video is checked before the first one is propagated, and ``out_dir`` is
            written only when all are done.
    """
    from tqdm import tqdm

    bench = get_benchmark(benchmark)
    device = pick_device(p.device)
    if encoder_spec == "semantic":
        semantic = semantic_features(p, device)
        encode = lambda x, layer: semantic(x)  # noqa: E731
    else:
        if encoder_spec == "authors":
            encoder = authors_encoder(p).to(device)
        else:
            encoder = load_encoder(encoder_spec, p.seed).to(device)
        encode = lambda x, layer: encoder(x, layer)  # noqa: E731
        if merge_semantic:
            encode = merged_encoder(encode, semantic_features(p, device), p.propagation.semantic_weight)
    cfg = propagation_config(p)
    videos = read_benchmark(benchmark, root)
    for video in tqdm(videos, desc=f"check {benchmark}", unit="video", mininterval=2.0):
        video.check()  # every frame decoded once before any work: a bad file costs seconds
    common = dict(layer=p.propagation.feature_layer, device=device, bf16=p.propagation.precision == "bf16")
    frames_done, seconds = 0, 0.0
    with atomic_dir(out_dir) as tmp:
        for video in tqdm(videos, desc=f"propagate {benchmark}", unit="video"):
            frames = video.read_frames()
            tic = time.perf_counter()
            if bench.task == "pose":
                joints = propagate_pose(encode, frames, video.joints[0], cfg, **common)
                write_pose(tmp / f"{video.name}.json", joints)
            else:
                if bench.task == "parts":
                    pred = propagate_parts(encode, frames, video.first_labels(), cfg, **common)
                else:
                    pred = propagate_video(
                        encode, frames, video.first_labels(), cfg, resolution=p.propagation.resolution,
                        later_labels=video.later_labels(), **common,
                    )  # fmt: skip
                for path, labels in zip(video.frames, pred):
                    write_mask(tmp / video.name / f"{path.stem}.png", labels)
            seconds += time.perf_counter() - tic
            frames_done += len(frames) - 1
        info = {
            "benchmark": benchmark,
            "encoder": encoder_spec,
            "merge_semantic": merge_semantic,
            "videos": len(videos),
            "frames": frames_done,
            "seconds_per_frame": seconds / max(frames_done, 1),
        }
        write_json(tmp / "propagation.json", info)
    return info


def evaluate_benchmark(
    p: Params,
    benchmark: str,
    root: Path,
    predictions: Path,
    out: Path | None,
    server_scores: Path | None = None,
    archive: Path | None = None,
    workers: int = 1,
    toolkit_csv: Path | None = None,
) -> tuple[dict, dict]:
    """Score a benchmark's predictions with its official definitions.

    - davis: J&F, J/F mean, recall, decay (DAVIS toolkit, :mod:`hvc.metrics`);
    - vost: J and J on the last 25% of frames (VOST toolkit);
    - miou: part mIoU (VIP, :mod:`hvc.parts`); pck: PCK@0.1/0.2 (JHMDB, :mod:`hvc.pose`);
    - server: the scores of the server's file ``server_scores`` when it exists
      (:func:`hvc.submission.read_server_scores`); until then the summary's ``status``
      says which archive (:func:`hvc.submission.write_archive`) to upload where.

    Returns (summary, per-object or per-video details), fractions in [0, 1]. When ``out``
    is given, writes the details to ``<out stem>.objects.json`` and then the summary to ``out``.
    ``workers``: sequences scored at once (davis scoring). ``toolkit_csv``: a folder that
    gets, for davis scoring, the DAVIS toolkit's ``global_results-val.csv`` and
    ``per-sequence_results-val.csv`` (:func:`hvc.metrics.davis_toolkit_csvs`), for other
    scorings a README.txt saying why there are none; written atomically.
    Raises:
        DataError: naming a missing or malformed prediction, annotation or score file.
    """
    bench = get_benchmark(benchmark)
    videos = read_benchmark(benchmark, root)
    names = [v.name for v in videos]
    details: dict = {}
    if bench.scoring == "davis":
        scores = evaluate_folder(Path(root) / bench.annotations, predictions, names, bound_th=p.eval.bound_th, workers=workers)
        details = scores.pop("per_object")
    elif bench.scoring == "vost":
        scores = evaluate_vost_folder(Path(root) / bench.annotations, predictions, names)
        details = scores.pop("per_object")
    elif bench.scoring == "miou":
        scores = evaluate_parts(videos, predictions)
    elif bench.scoring == "pck":
        pred = {v.name: read_pose(Path(predictions) / f"{v.name}.json") for v in videos}
        try:
            scores = evaluate_pose(videos, pred)
        except ValueError as e:
            raise DataError(Path(predictions), str(e)) from None
    elif bench.scoring == "server":
        scores = {"server": bench.server, "archive": str(archive) if archive else None}
        if server_scores is not None and Path(server_scores).is_file():
            scores.update(read_server_scores(Path(server_scores)))
            scores["score_file"] = str(server_scores)
        else:
            scores["status"] = (
                f"needs server score: upload {archive or 'the submission archive (hvc submission)'} to {bench.server}, "
                f"save the server's score file as {server_scores or '<--server-scores PATH>'}, run again"
            )
    else:
        raise ValueError(f"unknown scoring {bench.scoring!r}")
    if toolkit_csv is not None:
        _write_toolkit_csv(toolkit_csv, benchmark, bench.scoring, scores, details)
    if out is not None:
        write_json(out.with_name(out.stem + ".objects.json"), details)
        write_json(out, scores)
    return scores, details


def _write_toolkit_csv(folder: Path, benchmark: str, scoring: str, scores: dict, details: dict) -> None:
    """The DAVIS toolkit's two CSVs of a davis-scored benchmark in ``folder`` (atomic)."""
    from hvc.io import write_text
    from hvc.metrics import davis_toolkit_csvs

    with atomic_dir(folder) as tmp:
        if scoring == "davis":
            global_csv, sequence_csv = davis_toolkit_csvs(scores, details)
            write_text(tmp / "global_results-val.csv", global_csv)
            write_text(tmp / "per-sequence_results-val.csv", sequence_csv)
        else:
            write_text(tmp / "README.txt", f"{benchmark} is scored by {scoring}, not the DAVIS toolkit: no toolkit CSVs.\n")
