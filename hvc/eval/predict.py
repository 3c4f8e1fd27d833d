"""The ``hvc propagate`` stage: label propagation of the first-frame labels through every
video of a benchmark, with one frozen encoder; predictions written as the benchmark's files.
The algorithm itself is :mod:`hvc.eval.propagation` (and :mod:`hvc.eval.parts`,
:mod:`hvc.eval.pose` for part labels and joints).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path


from hvc.eval.registry import get_benchmark
from hvc.eval.readers import read_benchmark
from hvc.io import (
    atomic_dir,
    write_json,
    write_mask,
)
from hvc.config.params import Params
from hvc.eval.parts import propagate_parts
from hvc.eval.pose import propagate_pose, write_pose
from hvc.eval.propagation import PropagationConfig, merged_encoder, propagate_video
from hvc.device import pick_device
from hvc.eval.encoders import authors_encoder, load_encoder, semantic_features

log = logging.getLogger(__name__)


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
