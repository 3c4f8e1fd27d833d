"""What each stage reads, and the content ids that follow from it.

:func:`stage_reads` is the one place that says which parameter keys and which code each
stage reads. Everything else derives from it: the content id that names a stage's output
(:func:`stage_ids`: a hash of those parameters' values, the stage's code hash
(:func:`hvc.config.code.code_hash`) and the id of the output it reads, demo_data → shards →
train), the code hash the workflow's rules carry as params, and the ``params:`` and
``deps:`` of each generated DVC stage (:mod:`hvc.config.dvc`).

A method's own section (``hvc:``, ``liir:``, ...; :mod:`hvc.config.registry`) is read by the
stages of that method's experiments only: changing ``liir.bank_frames`` re-trains LIIR and
never HVC, and the other way round.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hvc.config.code import code_hash, stage_files
from hvc.config.datasets import TRAIN_SET_DATASETS
from hvc.config.params import BaseParams, propagation_for
from hvc.config.registry import method_spec
from hvc.config.sources import dataset_fingerprint

# Demo parameters read only when a method of the plan trains on clips (the demo's training videos).
DEMO_VIDEO_FIELDS = ("train_videos", "train_video_frames")
# Keys of a listed section that do not change the stage's output.
NOT_READ = {"train.log_every"}
# Propagation keys that name the semantic encoder: part of the encoder's identity
# (:func:`semantic_id`), not of the propagation settings.
SEMANTIC_KEYS = ("propagation.semantic_checkpoint", "propagation.semantic_weight")
# One name per stage: the workflow's rule, the DVC stage's kind, the ``hvc`` command
# (``demo-data`` for demo_data) and the key of its id and provenance record.
STAGES = ("fetch", "demo_data", "shards", "train", "propagate", "evaluate", "submission", "flow", "tables", "figures")


@dataclass(frozen=True)
class StageReads:
    """What one stage reads.

    Attributes:
        stage: the stage (:data:`STAGES`).
        keys: dotted parameter keys; a section name stands for every key in it, less
            :data:`NOT_READ` and ``exclude``.
        exclude: keys inside a listed section that the stage does not read.
        method: the method whose package the stage's code follows (the trained method, or
            the method of the encoder that is propagated).
        derived: values computed from the parameters that the keys alone do not show
            (e.g. a method's propagation preset as applied), hashed into the id.
    """

    stage: str
    keys: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    method: str = "hvc"
    derived: dict[str, Any] = field(default_factory=dict)

    def values(self, p: BaseParams) -> dict[str, Any]:
        """{key: value} of every key read (sections expanded), JSON-ready."""
        dump = p.model_dump(mode="json")
        out: dict[str, Any] = {}
        for key in self.keys:
            node: Any = dump
            for part in key.split("."):
                node = node[part]
            if isinstance(node, dict):
                out.update({f"{key}.{k}": v for k, v in node.items()})
            else:
                out[key] = node
        skip = set(self.exclude) | NOT_READ
        return {k: v for k, v in out.items() if k not in skip}

    def code_files(self) -> list[str]:
        """The package files the stage runs, relative to the checkout (DVC ``deps``)."""
        from hvc.config.code import PACKAGE_DIR

        return [f.relative_to(PACKAGE_DIR.parent).as_posix() for f in stage_files(self.stage, self.method)]

    def code_hash(self) -> str:
        """:func:`hvc.config.code.code_hash` of the stage's code."""
        return code_hash(self.stage, self.method)


def methods_in_plan(p: BaseParams) -> list[str]:
    """The trained method and every method of ``compare``, in order, once each."""
    return list(dict.fromkeys([p.method, *p.compare]))


def demo_videos(p: BaseParams) -> bool:
    """Whether the demo data also renders training videos: when a method of the plan trains
    on clips (:attr:`hvc.config.registry.MethodSpec.kinds`)."""
    return any(method_spec(m).reads_clips for m in methods_in_plan(p))


def stage_reads(stage: str, p: BaseParams, method: str | None = None) -> StageReads:
    """What ``stage`` reads under the parameters ``p``.

    Args:
        stage: one of :data:`STAGES`.
        p: the experiment's resolved parameters.
        method: for ``propagate``, the method of the encoder propagated (its preset and
            inference apply; default ``p.method``); elsewhere ``p.method``.
    Raises:
        KeyError: unknown stage or method.
    """
    method = method or p.method
    spec = method_spec(method)
    section = (method,) if spec.section is not None else ()
    if stage == "demo_data":
        exclude = () if demo_videos(p) else tuple(f"demo.{k}" for k in DEMO_VIDEO_FIELDS)
        return StageReads(stage, ("demo",), exclude, method)
    if stage == "shards":
        if p.data.train_set == "demo":  # the demo data's id is the upstream id
            return StageReads(stage, ("method", "data.train_set", "shards"), (), method)
        return StageReads(stage, ("method", "data.train_set", "shards", "data.root"), (), method, {"content": train_set_content(p)})
    if stage == "train":
        return StageReads(stage, ("seed", "method", "train", *section), (), method)
    if stage == "propagate":
        own = tuple(f"{method}.{k}" for k in spec.inference_keys)
        effective = propagation_for(p, method).model_dump(mode="json", exclude={"semantic_checkpoint", "semantic_weight"})
        derived = {"method": method, "propagation": effective}
        return StageReads(stage, ("seed", "propagation", *own), SEMANTIC_KEYS, method, derived)
    simple = {
        "fetch": ("data.root", "data.sources"),
        "evaluate": ("eval",),
        "submission": (),
        "flow": ("device", "propagation.resolution"),
        "tables": ("method", "compare", "data.benchmarks", "ablations", "baselines", "authors_checkpoint", "propagation.semantic_checkpoint"),
        "figures": ("method", "data.benchmarks", "ablations", "device", "propagation.resolution"),
    }
    return StageReads(stage, simple[stage], (), method)


def train_set_content(p: BaseParams) -> dict[str, Any]:
    """The content of a real training set (not the demo), part of the shards id and so of
    every id after it: a changed source folder (data.sources) or archive gives new shards
    and a new model, and a shared Snakemake output cache cannot hand over shards built from
    another dataset. :func:`hvc.config.sources.dataset_fingerprint` says what is hashed."""
    name = TRAIN_SET_DATASETS[p.data.train_set]
    return dataset_fingerprint(name, str(p.data.root), p.data.sources.get(name))


def content_id(obj: Any, length: int = 12) -> str:
    """Short SHA-256 of the canonical JSON of ``obj`` (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def stage_config(stage: str, p: BaseParams, method: str | None = None) -> dict[str, Any]:
    """What a stage reads as one mapping: ``params`` (:meth:`StageReads.values`) and, when
    there are any, the ``derived`` values (:func:`stage_reads`); the train stage's adds its
    shards' identity (:func:`train_config`). Its content id hashes this and the code."""
    if stage == "train":
        return train_config(p)
    reads = stage_reads(stage, p, method)
    return {"params": reads.values(p), **({"derived": reads.derived} if reads.derived else {})}


_config = stage_config


def train_config(p: BaseParams) -> dict[str, Any]:
    """What the train stage reads (:func:`stage_reads`), with its shards' identity: the
    checkpoint's ``config_id`` (a checkpoint of another setting is not resumed)."""
    reads = stage_reads("train", p)
    return {"params": reads.values(p), "shards": content_id(stage_config("shards", p))}


def authors_id(p: BaseParams) -> str | None:
    """Content id of the authors' released checkpoint (its path), None when unset."""
    if p.authors_checkpoint is None:
        return None
    return content_id({"checkpoint": p.authors_checkpoint}, length=8)


def semantic_id(p: BaseParams) -> str | None:
    """Content id of the semantic encoder (checkpoint path and merge weight), None when unset."""
    q = p.propagation
    if q.semantic_checkpoint is None:
        return None
    return content_id({"checkpoint": q.semantic_checkpoint, "weight": q.semantic_weight}, length=8)


def stage_ids(p: BaseParams, encoder_method: str | None = None) -> dict[str, str]:
    """Content ids of every stage output, keyed by stage: demo_data, shards, train, propagate,
    evaluate (the workflow's rule names and the ``hvc`` commands; their outputs lie in
    ``artifacts/data``, ``shards``, ``models``, ``predictions`` and ``scores``).

    Each hashes what the stage reads (:func:`stage_reads`: parameter values and code hash)
    and the id of the stage output it reads (data → shards → model), so a change upstream
    gives new ids downstream. Propagation and evaluation outputs are named by their
    encoder (a trained model's id) as well. ``encoder_method``: the method of the encoder
    the propagation id is for (default ``p.method``; HVC for the ImageNet, semantic and
    authors' encoders, which are HVC's backbone).
    """
    ids = {"demo_data": content_id({**_config("demo_data", p), "code": code_hash("demo_data", p.method)})}
    from_demo = ids["demo_data"] if p.data.train_set == "demo" else None  # a real set: data.root, in the params
    ids["shards"] = content_id({**_config("shards", p), "code": code_hash("shards", p.method), "data": from_demo})
    ids["train"] = content_id({"params": stage_reads("train", p).values(p), "code": code_hash("train", p.method), "shards": ids["shards"]})
    prop = stage_reads("propagate", p, encoder_method)
    ids["propagate"] = content_id({"params": prop.values(p), "derived": prop.derived, "code": prop.code_hash()})
    ids["evaluate"] = content_id({**_config("evaluate", p), "code": code_hash("evaluate", p.method)})
    return ids
