"""The experiment grid: which models to train and which encoders to score, from params.

The paper's tables (``hvc/data/published.yaml``) name their rows as overrides of the base
parameters. :func:`plan` resolves the rows of the tables to assemble (the demo table or
the benchmark tables, plus the ablation tables listed in ``params.ablations``) into
experiments, one per distinct content id, so Snakemake trains each setting once and
the tables stage finds each row's scores under the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from hvc.params import Params, deep_merge, semantic_id, stage_ids, validate_params

BASELINE_ENCODERS = ("random", "imagenet", "semantic")


@lru_cache(maxsize=1)
def published_tables() -> dict[str, Any]:
    """The paper's tables with their published numbers (``hvc/data/published.yaml``)."""
    text = resources.files("hvc").joinpath("data/published.yaml").read_text()
    return yaml.safe_load(text)["tables"]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"alpha": 1}} → {"train.alpha": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def override_args(overrides: dict[str, Any]) -> list[str]:
    """Overrides as ``KEY=VALUE`` strings for ``hvc ... --set`` (YAML-flow values)."""
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in sorted(flatten(overrides).items())]


@dataclass
class Experiment:
    """One trained model (or one baseline encoder) and where its artifacts live.

    Attributes:
        key: ``"hvc"`` for the base setting, the override string for an ablation
            (``"train.alpha=0.1"``), or a baseline name (``"random"``, ``"imagenet"``).
        overrides: nested overrides of the base params.
        params: the resolved parameters.
        ids: content ids (data, shards, model, propagation).
    """

    key: str
    overrides: dict[str, Any]
    params: Params
    ids: dict[str, str] = field(default_factory=dict)
    merge_semantic: bool = False

    @property
    def trained(self) -> bool:
        """Whether a model of ours is trained for it (not a baseline encoder)."""
        return self.key not in BASELINE_ENCODERS

    @property
    def encoder(self) -> str:
        """The encoder key in artifact paths: the model id (with ``+semantic-<id>`` when
        merged with the semantic encoder), the baseline's name, or ``semantic-<id>``."""
        if self.key == "semantic":
            return f"semantic-{semantic_id(self.params)}"
        if self.key in BASELINE_ENCODERS:
            return self.key
        if self.merge_semantic:
            return f"{self.ids['model']}+semantic-{semantic_id(self.params)}"
        return self.ids["model"]

    @property
    def set_args(self) -> list[str]:
        return override_args(self.overrides)


def table_columns(table: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, metric) of each value column of a published table (see published.yaml)."""
    if "columns" in table:
        return [(src, m) for src, m in table["columns"]]
    return [(b, m) for b in table["benchmarks"] for m in table["metrics"]]


def source_available(source: str, p: Params) -> bool:
    """Whether these params produce a column source: a listed benchmark, the training
    log (``train``), or the flow comparison on a listed benchmark (``flow_<benchmark>``)."""
    if source == "train":
        return True
    return source.removeprefix("flow_") in p.data.benchmarks


def table_names(p: Params) -> list[str]:
    """Tables assembled for these params: every non-ablation table with a column these
    params produce (``demo`` when the demo benchmark is scored; Table 8, the training
    cost, always), then ``params.ablations``."""
    names = []
    for name, t in published_tables().items():
        if name.startswith("table7") or name == "table6":
            continue
        if any(source_available(src, p) for src, _ in table_columns(t)):
            names.append(name)
    return names + [a for a in p.ablations if a not in names]


def resolve(p: Params, overrides: dict[str, Any] | None) -> Params:
    """Base params with a row's overrides applied (validated)."""
    if not overrides:
        return p
    return validate_params(deep_merge(p.model_dump(), overrides), source="ablation row")


def row_experiment(p: Params, row: dict[str, Any]) -> Experiment | None:
    """The experiment behind a table row, or None for a row we cannot compute (the
    semantic encoder, alone or merged, without ``propagation.semantic_checkpoint``)."""
    encoder = row.get("encoder", "hvc")
    if encoder in ("random", "imagenet"):
        return Experiment(encoder, {}, p, stage_ids(p))
    merge = bool(row.get("merge_semantic"))
    if (encoder == "semantic" or merge) and p.propagation.semantic_checkpoint is None:
        return None
    if encoder == "semantic":
        return Experiment("semantic", {}, p, stage_ids(p))
    rp = resolve(p, row.get("overrides"))
    ids = stage_ids(rp)
    base_model = stage_ids(p)["model"]
    key = "hvc" if ids["model"] == base_model else ",".join(override_args(row.get("overrides", {})))
    if merge:
        key += "+semantic"
    overrides = row.get("overrides", {}) if ids["model"] != base_model else {}
    return Experiment(key, overrides, rp, ids, merge_semantic=merge)


def plan(p: Params) -> dict[str, Experiment]:
    """Every experiment the tables of these params need, keyed by :attr:`Experiment.key`."""
    out: dict[str, Experiment] = {"hvc": Experiment("hvc", {}, p, stage_ids(p))}
    for b in p.baselines:
        out[b] = Experiment(b, {}, p, stage_ids(p))
    if p.propagation.semantic_checkpoint is not None:  # HVC with and without the merge, and MoCo alone
        out["hvc+semantic"] = Experiment("hvc+semantic", {}, p, stage_ids(p), merge_semantic=True)
        out["semantic"] = Experiment("semantic", {}, p, stage_ids(p))
    tables = published_tables()
    for name in table_names(p):
        for row in tables[name]["rows"]:
            if row.get("encoder") in ("random", "imagenet") and row["encoder"] not in p.baselines:
                continue
            if row.get("overrides") and name not in p.ablations:
                continue  # e.g. HVC-YT in Table 1: trained only when its ablation table is listed
            exp = row_experiment(p, row)
            if exp is not None:
                out.setdefault(exp.key, exp)
    return out
