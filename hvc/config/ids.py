"""Content ids: each stage's output is addressed by a hash of exactly what that stage reads
and of the code it runs (:func:`hvc.config.code.code_hash`).

Changing a training parameter, or the code of training (e.g. ``hvc/methods/hvc/loss.py``),
gives a new model id and re-runs training and what follows, never the data or shard stages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hvc.config.code import code_hash
from hvc.config.params import METHODS, Params

# Demo parameters read only when the method trains on clips (the demo's training videos).
DEMO_VIDEO_FIELDS = ("train_videos", "train_video_frames")


def content_id(obj: Any, length: int = 12) -> str:
    """Short SHA-256 of the canonical JSON of ``obj`` (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def data_config(p: Params) -> dict[str, Any]:
    """What the demo-data stage reads: the demo section, less the training-video settings
    unless the method trains on clips (then the demo also renders training videos)."""
    out: dict[str, Any] = {"demo": p.demo.model_dump(exclude=set(DEMO_VIDEO_FIELDS))}
    if METHODS[p.method] == "clips":
        out["videos"] = {k: getattr(p.demo, k) for k in DEMO_VIDEO_FIELDS}
    return out


def shards_config(p: Params) -> dict[str, Any]:
    """What the shard stage reads (and its input's identity)."""
    upstream = data_config(p) if p.data.train_set == "demo" else {"root": p.data.root, "content": train_set_content(p)}
    out = {"train_set": p.data.train_set, "shards": p.shards.model_dump(), "upstream": upstream}
    if METHODS[p.method] == "clips":
        out["unit"] = "video"
    return out


def train_set_content(p: Params) -> dict[str, Any]:
    """The content of a real training set (not the demo), part of the shards id and so of
    every id after it: a changed source folder (data.sources) or archive gives new shards
    and a new model, and a shared Snakemake output cache cannot hand over shards built from
    another dataset. :func:`hvc.data.sources.dataset_fingerprint` says what is hashed."""
    from hvc.data.sources import dataset_fingerprint
    from hvc.data.shards import TRAIN_SET_DATASETS

    name = TRAIN_SET_DATASETS[p.data.train_set]
    return dataset_fingerprint(name, str(p.data.root), p.data.sources.get(name))


def train_config(p: Params) -> dict[str, Any]:
    """What the train stage reads: shards identity, seed, the method and the train section
    (less ``log_every``, which only changes how often metrics are logged), plus the clips
    section for methods trained on clips and the method's own section (``liir``)."""
    out = {
        "seed": p.seed,
        "method": p.method,
        "train": p.train.model_dump(exclude={"log_every"}),
        "shards": content_id(shards_config(p)),
    }
    if METHODS[p.method] == "clips":
        out["clips"] = p.clips.model_dump()
    if p.method == "liir":
        out["liir"] = p.liir.model_dump()
    return out


def propagation_config(p: Params) -> dict[str, Any]:
    """What the propagate stage reads (besides the encoder): the propagation section and the
    seed (the random-init baseline is drawn from it). The semantic encoder is part of the
    encoder's identity (:func:`semantic_id`), not of the propagation settings."""
    return {
        "seed": p.seed,
        "propagation": p.propagation.model_dump(exclude={"semantic_checkpoint", "semantic_weight"}),
    }


def evaluation_config(p: Params) -> dict[str, Any]:
    """What the evaluate stage reads besides the predictions: the eval section."""
    return {"eval": p.eval.model_dump()}


def authors_id(p: Params) -> str | None:
    """Content id of the authors' released checkpoint (its path), None when unset."""
    if p.authors_checkpoint is None:
        return None
    return content_id({"checkpoint": p.authors_checkpoint}, length=8)


def semantic_id(p: Params) -> str | None:
    """Content id of the semantic encoder (checkpoint path and merge weight), None when unset."""
    q = p.propagation
    if q.semantic_checkpoint is None:
        return None
    return content_id({"checkpoint": q.semantic_checkpoint, "weight": q.semantic_weight}, length=8)


def stage_ids(p: Params) -> dict[str, str]:
    """Content ids of every stage output, keyed by stage: data, shards, model, propagation,
    evaluation.

    Each hashes the stage's parameters (the ``*_config`` functions above), the hash of the
    code it runs (:func:`hvc.config.code.code_hash`) and the id of the stage output it reads
    (data → shards → model), so a change upstream gives new ids downstream. Propagation and
    evaluation outputs are named by their encoder (a trained model's id) as well.
    """
    code = {stage: code_hash(stage, p.method) for stage in ("data", "shards", "model", "propagation", "evaluation")}
    ids = {"data": content_id({"params": data_config(p), "code": code["data"]})}
    from_demo = ids["data"] if p.data.train_set == "demo" else None  # a real set: data.root, in the params
    ids["shards"] = content_id({"params": shards_config(p), "code": code["shards"], "data": from_demo})
    ids["model"] = content_id({"params": train_config(p), "code": code["model"], "shards": ids["shards"]})
    ids["propagation"] = content_id({"params": propagation_config(p), "code": code["propagation"]})
    ids["evaluation"] = content_id({"params": evaluation_config(p), "code": code["evaluation"]})
    return ids
