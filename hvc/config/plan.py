"""The experiment grid: which models to train and which encoders to score, from params.

The paper's tables (``hvc/config/published.yaml``) name their rows as overrides of the base
parameters. :func:`plan` resolves the rows of the tables to assemble (the demo table or
the benchmark tables, plus the ablation tables listed in ``params.ablations``) into
experiments, one per distinct content id, so Snakemake trains each setting once and
the tables stage finds each row's scores under the same key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from hvc.config.benchmarks import get_benchmark
from hvc.config.datasets import TRAIN_VIDEO_GLOBS
from hvc.config.ids import authors_id, methods_in_plan, semantic_id, stage_ids
from hvc.config.params import Params, deep_merge, flatten, validate_params
from hvc.config.published import TRAINED, published_tables
from hvc.config.registry import encoder_provider, method_spec

BASELINE_ENCODERS = ("random", "imagenet", "semantic", "authors")

# Encoders whose weights come from a file named in params, and the key naming it.
CHECKPOINT_KEYS = {"semantic": "propagation.semantic_checkpoint", "authors": "authors_checkpoint"}


def override_args(overrides: dict[str, Any]) -> list[str]:
    """Overrides as ``KEY=VALUE`` strings for ``hvc ... --set`` (YAML-flow values)."""
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in sorted(flatten(overrides).items())]


@dataclass
class Experiment:
    """One trained model (or one baseline encoder) and where its artifacts live.

    Attributes:
        key: the trained method's name (``"hvc"``) for the base setting, the override
            string for an ablation (``"hvc.alpha=0.1"``), or an encoder not trained here
            (``"random"``, ``"imagenet"``, ``"semantic"``, ``"authors"``); ``+semantic``
            when merged with the semantic encoder.
        overrides: nested overrides of the base params.
        params: the resolved parameters.
        ids: content ids by stage (:func:`hvc.config.ids.stage_ids`: demo_data, shards, train, propagate, evaluate).
        seed_of: for a repetition with another seed (``params.seeds``), the key of the
            experiment it repeats (its key is that key with ``@seed=<n>``); else None.
        merge_semantic: the encoder's features are merged with the semantic encoder's.
        random_init: the encoder of ``params.method`` at random initialisation (seeded by
            ``params.seed``), propagated with these params (``overrides`` name the method
            and the propagation): nothing is trained for it; its encoder key is ``random``.
        model_of: the key of the experiment whose trained model this one propagates
            differently (same model id, another propagation; e.g. ``budget-liir`` for
            ``budget-liir-generic``); None when it names its own model.
    """

    key: str
    overrides: dict[str, Any]
    params: Params
    ids: dict[str, str] = field(default_factory=dict)
    merge_semantic: bool = False
    seed_of: str | None = None  # the experiment this one repeats with another seed (params.seeds)
    random_init: bool = False
    model_of: str | None = None

    @property
    def trained(self) -> bool:
        """Whether a model of ours is trained for it (not a baseline encoder, not a random initialisation)."""
        return not self.random_init and self.key.removesuffix("+semantic") not in BASELINE_ENCODERS

    @property
    def encoder_method(self) -> str:
        """The method of the encoder propagated: the trained method (also for its random
        initialisation), or the method that provides a baseline encoder (its registry entry)."""
        name = self.key.removesuffix("+semantic")
        if self.trained or self.random_init or name == "random":
            return self.params.method
        return encoder_provider(name) or self.params.method

    @property
    def display(self) -> str:
        """What the experiment is, for plans and tables: the method's display name (and the
        overrides of an ablation), or the baseline encoder."""
        name = method_spec(self.params.method).display
        if self.random_init or self.key.removesuffix("+semantic") == "random":
            return f"{name} random init"
        if not self.trained:
            return self.key
        if self.key.startswith(BUDGET_PREFIX):
            return f"{name} (equal budget)"
        rest = [a for a in self.set_args if not a.startswith("method=")]
        return f"{name} {', '.join(rest)}" if rest else name

    @property
    def encoder(self) -> str:
        """The encoder key in artifact paths: the model id (with ``+semantic-<id>`` when
        merged with the semantic encoder), the baseline's name, or ``semantic-<id>``."""
        if self.key == "semantic":
            return f"semantic-{semantic_id(self.params)}"
        if self.random_init:
            return "random"
        if self.key.removesuffix("+semantic") == "authors":
            base = f"authors-{authors_id(self.params)}"
        elif self.key in BASELINE_ENCODERS:
            return self.key
        else:
            base = self.ids["train"]
        return f"{base}+semantic-{semantic_id(self.params)}" if self.merge_semantic else base

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
    cost, always), then ``params.ablations``, then ``budget`` when ``compare`` lists a method
    (:func:`budget_experiments`; not a table of the paper), then ``sweep`` when ``sweep``
    is set (:func:`sweep_experiments`)."""
    names = []
    for name, t in published_tables().items():
        if name.startswith("table7") or name == "table6":
            continue
        if any(source_available(src, p) for src, _ in table_columns(t)):
            names.append(name)
    return names + [a for a in p.ablations if a not in names] + (["budget"] if p.compare else []) + (["sweep"] if p.sweep else [])


def with_video_train_set(p: Params, overrides: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row's overrides, plus the method's video training set (``data.train_set``, its
    registry entry's ``video_train_set``) when the row trains a method on clips
    (``method`` override, e.g. LIIR) and the base training set has no videos (COCO): LIIR
    trains on YouTube-VOS videos (Li et al., CVPR 2022, §3.3)."""
    method = (overrides or {}).get("method")
    if method is None or "train_set" in (overrides or {}).get("data", {}):
        return overrides
    spec = method_spec(method)
    if not spec.reads_clips or p.data.train_set in TRAIN_VIDEO_GLOBS:
        return overrides
    return deep_merge(overrides or {}, {"data": {"train_set": spec.video_train_set}})


def resolve(p: Params, overrides: dict[str, Any] | None) -> Params:
    """Base params with a row's overrides applied (validated)."""
    if not overrides:
        return p
    # only the keys the files set: a preset a row turns on fills the rest
    return validate_params(deep_merge(p.model_dump(exclude_unset=True), overrides), source="ablation row")


def missing_checkpoint(p: Params, row: dict[str, Any]) -> str | None:
    """The params key a row needs but these params leave unset (``authors_checkpoint`` for
    the authors' weights, ``propagation.semantic_checkpoint`` for the semantic encoder,
    alone or merged), or None."""
    encoder = row.get("encoder", TRAINED)
    if encoder == "authors" and p.authors_checkpoint is None:
        return CHECKPOINT_KEYS["authors"]
    if (encoder == "semantic" or row.get("merge_semantic")) and p.propagation.semantic_checkpoint is None:
        return CHECKPOINT_KEYS["semantic"]
    return None


def baseline(key: str, p: Params, merge: bool = False) -> Experiment:
    """The experiment of an encoder not trained here (``random``, ``imagenet``, ``semantic``,
    ``authors``), its propagation id for that encoder's method."""
    exp = Experiment(key, {}, p, {}, merge_semantic=merge)
    exp.ids = stage_ids(p, exp.encoder_method)
    return exp


def row_experiment(p: Params, row: dict[str, Any]) -> Experiment | None:
    """The experiment behind a table row, or None for a row we cannot compute (see
    :func:`missing_checkpoint`). A row's ``encoder`` is ``trained`` (the default: a model
    trained here, with the row's overrides) or a baseline encoder."""
    encoder = row.get("encoder", TRAINED)
    if encoder in ("random", "imagenet"):
        return baseline(encoder, p)
    if missing_checkpoint(p, row) is not None:
        return None
    merge = bool(row.get("merge_semantic"))
    if encoder in ("semantic", "authors"):
        return baseline(encoder + ("+semantic" if merge else ""), p, merge)
    row_overrides = with_video_train_set(p, row.get("overrides")) or {}
    rp = resolve(p, row_overrides)
    ids = stage_ids(rp)
    base_model = stage_ids(p)["train"]
    key = p.method if ids["train"] == base_model else ",".join(override_args(row_overrides))
    if merge:
        key += "+semantic"
    overrides = row_overrides if ids["train"] != base_model else {}
    return Experiment(key, overrides, rp, ids, merge_semantic=merge)


def columns(table: dict[str, Any], p: Params) -> list[tuple[str, str, bool]]:
    """(source, metric, has_published) of each value column of a table for these params:
    the table's own columns, and, in J&F-only tables (ablations), the other scored
    DAVIS-scored benchmarks (without published values)."""
    cols = [(src, m, True) for src, m in table_columns(table)]
    if "benchmarks" in table and table["benchmarks"] != ["demo"] and table["metrics"] == ["JF_mean"]:
        extra = [b for b in p.data.benchmarks if b not in table["benchmarks"] and get_benchmark(b).scoring == "davis"]
        cols += [(b, "JF_mean", False) for b in extra]
    return cols


def run_rows(p: Params) -> Iterator[tuple[str, dict[str, Any], Experiment]]:
    """(table name, row, experiment) of every table row these params compute: rows of
    baselines not in ``baselines``, training variants that no table in ``ablations``
    trains (HVC-YT in Table 1 runs when table7e is listed) and semantic rows without a
    checkpoint are left out (their cells say why)."""
    tables = published_tables()
    names = table_names(p)
    ablation_keys = {
        exp.key for name in p.ablations for row in tables[name]["rows"] if (exp := row_experiment(p, row)) is not None
    }
    for name in names:
        if name not in tables:  # the budget table: budget_experiments
            continue
        for row in tables[name]["rows"]:
            if row.get("encoder") in ("random", "imagenet") and row["encoder"] not in p.baselines:
                continue
            exp = row_experiment(p, row)
            if exp is None:
                continue
            method = row.get("overrides", {}).get("method")
            if method is not None:  # a method's own row (LIIR): trained when `compare` lists it
                if method in p.compare and method != p.method:  # (the trained method's base rows show it)
                    yield name, row, exp
                continue
            if row.get("overrides") and name not in p.ablations and exp.key not in ablation_keys | {p.method}:
                continue  # e.g. HVC-YT in Table 1: trained only when an ablation table lists it (table7e)
            yield name, row, exp


def plan(p: Params) -> dict[str, Experiment]:
    """Every experiment the tables of these params need, keyed by :attr:`Experiment.key`."""
    base = p.method
    out: dict[str, Experiment] = {base: Experiment(base, {}, p, stage_ids(p))}
    for b in p.baselines:
        out[b] = baseline(b, p)
    if p.propagation.semantic_checkpoint is not None:  # the trained model with and without the merge, and MoCo alone
        out[f"{base}+semantic"] = Experiment(f"{base}+semantic", {}, p, stage_ids(p), merge_semantic=True)
        out["semantic"] = baseline("semantic", p)
    if p.authors_checkpoint is not None:  # the authors' released weights, scored like ours
        out["authors"] = baseline("authors", p)
    for _, _, exp in run_rows(p):
        out.setdefault(exp.key, exp)
    for _, exp in sweep_experiments(p):
        out.setdefault(exp.key, exp)
    out.update(budget_experiments(p))
    out.update(seed_experiments(p, out))
    return out


BUDGET_PREFIX = "budget-"


def budget_benchmark(p: Params) -> str | None:
    """The benchmark of the equal-budget table: ``budget.benchmark``, else the first of
    ``data.benchmarks`` scored with J&F (DAVIS-style); None when there is none."""
    if p.budget.benchmark is not None:
        return p.budget.benchmark
    return next((b for b in p.data.benchmarks if get_benchmark(b).scoring == "davis"), None)


def budget_overrides(p: Params, method: str) -> dict[str, Any]:
    """Overrides of the base params for ``method`` in the equal-budget table: the method
    (its encoders then get its own propagation preset and inference), the budget as
    ``train.max_steps`` = ceil(budget.images / train.batch_size) or ``train.max_seconds`` =
    budget.seconds, and, when a compared method trains on clips, a training set with videos
    for every method (the same data: images of its frames for HVC, clips for LIIR)."""
    t = p.train
    train = (
        {"max_steps": -(-p.budget.images // t.batch_size)} if p.budget.unit == "images" else {"max_seconds": p.budget.seconds}
    )
    out: dict[str, Any] = {"method": method, "train": train}
    for peer in p.compare:
        filled = with_video_train_set(p, {"method": peer}) or {}
        if "data" in filled:
            out["data"] = filled["data"]
    return out


GENERIC_SUFFIX = "-generic"
RANDOM_SUFFIX = "-random"


def budget_inferences(p: Params, method: str) -> list[str]:
    """The inference paths of ``method`` in the equal-budget table: ``propagation.inference``,
    and also ``generic`` (the generic label propagation) when that is ``method`` and the
    method has its own inference (its registry entry's ``inference``)."""
    own = method_spec(method).inference is not None and p.propagation.inference == "method"
    return ["method", "generic"] if own else [p.propagation.inference]


def budget_experiments(p: Params) -> dict[str, Experiment]:
    """The experiments of the equal-budget table (none when ``compare`` is empty), for the
    trained method and every method of ``compare``, in that order:

    - ``budget-<method>``: trained on the same data for the same budget
      (:func:`budget_overrides`), propagated with the method's own inference when it has one;
    - ``budget-<method>-generic``: the same model (same model id; only the propagation id
      differs) through the generic label propagation (``propagation.inference: generic``),
      for a method with its own inference (:func:`budget_inferences`);
    - ``budget-<method>-random`` (and ``-random-generic``): the same network at random
      initialisation, seeded by ``seed`` as the trained one, through the same inference
      path(s); nothing is trained for it (:attr:`Experiment.random_init`).
    """
    if not p.compare:
        return {}
    out = {}
    for method in methods_in_plan(p):
        overrides = budget_overrides(p, method)
        for random_init in (False, True):
            for inference in budget_inferences(p, method):
                generic = {"propagation": {"inference": "generic"}} if inference != p.propagation.inference else {}
                # a random initialisation trains nothing: only the method and the propagation
                rows = deep_merge({"method": method} if random_init else overrides, generic)
                key = BUDGET_PREFIX + method + RANDOM_SUFFIX * random_init + GENERIC_SUFFIX * bool(generic)
                rp = resolve(p, rows)
                owner = None if random_init or not generic else BUDGET_PREFIX + method
                out[key] = Experiment(key, rows, rp, stage_ids(rp), random_init=random_init, model_of=owner)
    return out


def score_requests(p: Params) -> list[tuple[str, str]]:
    """(experiment key, source) of every cell the tables show, sorted: only these are
    propagated and scored (an ablation model is not run on VIP because VIP is listed)."""
    tables = published_tables()
    needed = set()
    for name, _, exp in run_rows(p):
        for src, _, _ in columns(tables[name], p):
            if source_available(src, p):
                needed.add((exp.key, src))
    bench = budget_benchmark(p)
    for key, exp in budget_experiments(p).items():
        if exp.trained:
            needed.add((key, "train"))
        if bench is not None:
            needed.add((key, bench))
    needed |= sweep_requests(p)
    return sorted(needed | seed_requests(p, needed))


def shards_owners(experiments: dict[str, Experiment]) -> dict[str, Experiment]:
    """The experiment that names each distinct shards setting (content id → experiment):
    the base setting when it has those shards, else the one with the fewest overrides
    (ties by key), so its ``--set`` arguments are only the ones that change the shards."""
    owners: dict[str, Experiment] = {}
    trained = [e for e in experiments.values() if e.trained]
    for e in sorted(trained, key=lambda e: (bool(e.overrides), len(e.set_args), e.key)):
        owners.setdefault(e.ids["shards"], e)
    return owners


def overlay_keys(experiments: dict[str, Any], scored: set[tuple[str, str]], benchmarks: list[str]) -> list[str]:
    """The experiments whose predictions get a mask overlay: the base model (the first
    experiment of the plan, keyed by its method), the random baseline, and for every other
    trained method the first of its experiments that is scored on a benchmark (LIIR: its row
    of Table 1, or its equal-budget run).

    Args:
        experiments: :func:`hvc.config.plan.plan` (key → experiment, in plan order).
        scored: the (experiment, benchmark) pairs the tables score.
        benchmarks: ``data.benchmarks``.
    """
    base = next(iter(experiments))
    keys = [k for k in (base, "random") if k in experiments]
    methods = {experiments[base].params.method}
    for key, e in experiments.items():
        if e.trained and not e.merge_semantic and e.params.method not in methods and any((key, b) in scored for b in benchmarks):
            keys.append(key)
            methods.add(e.params.method)
    return keys


# --------------------------------------------------------------------------- sweeps and seeds

SEED_MARK = "@seed="
# Stages whose jobs get an experiment's overrides (--set): a swept key must be read by one of them.
SWEEP_STAGES = ("demo_data", "shards", "train", "propagate")


def nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"hvc.alpha": 0.1}`` → ``{"hvc": {"alpha": 0.1}}`` (the inverse of :func:`flatten`)."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *sections, leaf = key.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def sweep_points(p: Params) -> list[dict[str, Any]]:
    """The settings of ``params.sweep``, each ``{dotted key: value}``: the grid product of
    the keys' values, the first key varying slowest (``{a: [1, 2], b: [x, y]}`` → a=1 b=x,
    a=1 b=y, a=2 b=x, a=2 b=y); none without a sweep.

    Raises:
        ParamsError: a swept key that no stage running an experiment's overrides reads
            (:data:`SWEEP_STAGES`: demo data, shards, training, propagation), e.g.
            ``eval.bound_th`` or ``data.benchmarks``: every value would give the same results.
    """
    import itertools

    from hvc.config.ids import stage_reads
    from hvc.config.section import ParamsError

    if not p.sweep:
        return []
    read = {k for stage in SWEEP_STAGES for k in stage_reads(stage, p).values(p)}
    for key in p.sweep:
        if key not in read:
            raise ParamsError(
                f"sweep: {key}: read by no stage of a {p.method} experiment that takes overrides "
                f"({', '.join(SWEEP_STAGES)}); run one --config per value instead"
            )
    keys = list(p.sweep)
    return [dict(zip(keys, values)) for values in itertools.product(*(p.sweep[k] for k in keys))]


def sweep_experiments(p: Params) -> list[tuple[dict[str, Any], Experiment]]:
    """(setting, experiment) of every point of the sweep (:func:`sweep_points`). A point's
    key is its override string (``hvc.alpha=0.1``, ``hvc.alpha=0.1,train.lr=0.01``), the
    same as an ablation row of that setting, so the two share one model; a point that
    gives the base setting's ids is the base experiment (key ``params.method``)."""
    base = stage_ids(p)
    out = []
    for point in sweep_points(p):
        overrides = nested(point)
        rp = resolve(p, overrides)
        ids = stage_ids(rp)
        if all(ids[k] == base[k] for k in SWEEP_STAGES):
            out.append((point, Experiment(p.method, {}, p, base)))
        else:
            out.append((point, Experiment(",".join(override_args(overrides)), overrides, rp, ids)))
    return out


def sweep_requests(p: Params) -> set[tuple[str, str]]:
    """(experiment key, source) the sweep table reads: every benchmark and the training log."""
    return {(exp.key, src) for _, exp in sweep_experiments(p) for src in [*p.data.benchmarks, "train"]}


def seed_key(key: str, seed: int) -> str:
    """The key of ``key`` repeated with ``seed``: ``hvc@seed=1``, ``hvc.alpha=0.1@seed=1``,
    ``hvc@seed=1+semantic`` (the merge suffix stays last, so the plain model's key is the
    merged key without it, as for the base)."""
    if key.endswith("+semantic"):
        return f"{key.removesuffix('+semantic')}{SEED_MARK}{seed}+semantic"
    return f"{key}{SEED_MARK}{seed}"


def seed_experiments(p: Params, experiments: dict[str, Experiment]) -> dict[str, Experiment]:
    """The repetitions of ``params.seeds``: every trained experiment of ``experiments``
    (not the baselines, which run at ``seed``, and not the equal-budget runs) once more
    per seed of ``seeds`` other than ``seed``, with ``seed`` overridden (its own model,
    propagation and score ids). None with fewer than two seeds."""
    out: dict[str, Experiment] = {}
    if len(p.seeds) < 2:
        return out
    for key, exp in experiments.items():
        if not exp.trained or exp.seed_of is not None or key.startswith(BUDGET_PREFIX):
            continue
        for seed in p.seeds:
            if seed == p.seed:
                continue
            overrides = deep_merge(exp.overrides, {"seed": seed})
            rp = resolve(p, overrides)
            k = seed_key(key, seed)
            out[k] = Experiment(k, overrides, rp, stage_ids(rp), merge_semantic=exp.merge_semantic, seed_of=key)
    return out


def seed_groups(experiments: dict[str, Experiment]) -> dict[str, list[str]]:
    """Experiment key → the keys of its runs over ``params.seeds`` (itself first, then its
    repetitions in seed order), for every experiment that has repetitions."""
    groups: dict[str, list[str]] = {}
    for key, exp in experiments.items():
        if exp.seed_of is not None:
            groups.setdefault(exp.seed_of, [exp.seed_of]).append(key)
    return groups


def seed_requests(p: Params, needed: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The cells of every repetition (``params.seeds``): each (key, source) of ``needed``
    whose experiment is repeated, for each repetition."""
    groups = seed_groups(plan(p)) if len(p.seeds) > 1 else {}
    return {(k, src) for key, src in needed for k in groups.get(key, [])[1:]}
