"""``dvc.yaml`` generated from the experiment plan: DVC runs every job Snakemake runs.

:func:`dvc_stages` turns :func:`hvc.config.plan.plan` (the grid the Snakefile builds its
DAG from: the base model, the ablation rows of ``ablations``, the baselines, every
benchmark of ``data.benchmarks``, the datasets to fetch) into DVC stages that call the
same ``hvc`` subcommands with the same arguments as the Snakemake rules. ``hvc dvc-yaml``
writes them to ``dvc.yaml``; ``hvc dvc-yaml --check`` says which stages differ when the
file no longer matches the parameters (after a change to ``ablations``, ``baselines``,
``data.benchmarks``, the training set, ...), and the first DVC stage (``plan``) runs that
check, so a stale ``dvc.yaml`` stops ``dvc repro`` with one line.

Snakemake names outputs by content id (``artifacts/<kind>/<id>``); DVC does its own
content addressing, and ``dvc exp run -S train.alpha=0.5`` edits ``params.yaml`` without
regenerating ``dvc.yaml``. So DVC's stages and outputs are named by experiment key
(``hvc``, ``random``, ``train.alpha=0.1``, ...), under their own roots, where the two tools
never write the same path: ``artifacts/dvc/<kind>/<experiment>``, ``metrics/<experiment>/``
and ``results/dvc/``. Content ids are not passed (no ``--expect-id``): under ``-S`` they
change while the paths stay.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from hvc.config.code import PACKAGE_DIR, STAGE_ENTRIES, stage_files
from hvc.config.params import Params, ParamsError, read_yaml
from hvc.config.plan import Experiment, flatten, override_args, plan, score_requests
from hvc.data.registry import STAMP_NAME
from hvc.eval.registry import benchmark_root, get_benchmark

# DVC's own output roots (Snakemake writes artifacts/<kind>/<id>, results/tables, results/figures)
ARTIFACTS = "artifacts/dvc"
DATA = f"{ARTIFACTS}/data"
PLAN_STAMP = f"{ARTIFACTS}/plan.txt"
SHARDS = f"{ARTIFACTS}/shards/{{name}}"
MODEL = f"{ARTIFACTS}/models/{{name}}"
PREDICTIONS = f"{ARTIFACTS}/predictions/{{name}}/{{benchmark}}"
SCORES = f"{ARTIFACTS}/scores/{{name}}/{{benchmark}}.json"
FLOW = f"{ARTIFACTS}/flow/{{name}}/{{benchmark}}.json"
METRICS = "metrics/{name}/{benchmark}.json"
SUBMISSIONS = "results/dvc/submissions/{benchmark}/{name}.zip"
SERVER_SCORES = "results/dvc/server_scores/{benchmark}/{name}.txt"  # saved by the user
TABLES = "results/dvc/tables"
FIGURES = "results/dvc/figures"
PLAN_MESSAGE = "dvc.yaml matches the experiment plan of the parameter files\n"

# The headline number of each scoring, as `dvc exp show` shows it: (column, summary key)
HEADLINES = {
    "davis": ("J&F", "JF_mean"),
    "vost": ("J", "J_mean"),
    "miou": ("mIoU", "mIoU"),
    "pck": ("PCK@0.1", "PCK@0.1"),
}

# Parameters each kind of stage reads (dotted keys; a section stands for all its keys).
STAGE_PARAMS = {
    "fetch": ("data.root", "data.sources"),
    "demo_data": ("demo",),
    "shards": ("data.train_set", "shards"),
    "train": ("seed", "device", "method", "train"),
    "propagate": ("seed", "device", "propagation"),
    "evaluate": ("eval",),
    "submission": (),
    "flow": ("device", "propagation.resolution"),
    "tables": ("data.benchmarks", "ablations", "baselines", "authors_checkpoint", "propagation.semantic_checkpoint"),
    "figures": ("data.benchmarks", "ablations", "device", "propagation.resolution"),
}
# Code stage (hvc.config.code.STAGE_ENTRIES) of each kind of stage: its source files are deps.
CODE_STAGE = {
    "fetch": "fetch",
    "demo_data": "data",
    "shards": "shards",
    "train": "model",
    "propagate": "propagation",
    "evaluate": "evaluation",
    "submission": "submission",
    "flow": "flow",
    "tables": "tables",
    "figures": "figures",
}


def slug(key: str) -> str:
    """An experiment key as a DVC stage-name part and folder name.

    DVC stage names allow letters, digits, ``_`` and ``-`` only: ``=`` becomes ``-``, ``.``
    ``_``, ``,`` ``--`` and ``+`` ``-with-`` (``"train.alpha=0.1"`` → ``"train_alpha-0_1"``,
    ``"hvc+semantic"`` → ``"hvc-with-semantic"``); anything else ``_``.
    """
    s = key.replace("+", "-with-").replace(",", "--").replace("=", "-").replace(".", "_")
    return re.sub(r"[^A-Za-z0-9_-]", "_", s)


def headline_metrics(benchmark: str, summary: dict[str, Any]) -> dict[str, float]:
    """The number ``dvc exp show`` shows for one benchmark's score summary, as a flat mapping.

    J&F (DAVIS-scored benchmarks), J (VOST), mIoU (VIP), PCK@0.1 (JHMDB); for server-scored
    benchmarks the server's overall score (YouTube-VOS) or J&F (DAVIS test-dev) once its
    score file is saved, nothing before. Fractions in [0, 1].

    Raises:
        KeyError: unknown benchmark.
    """
    scoring = get_benchmark(benchmark).scoring
    if scoring == "server":
        for column, key in (("overall", "overall"), ("J&F", "JF_mean")):
            if key in summary:
                return {column: float(summary[key])}
        return {}
    column, key = HEADLINES[scoring]
    return {column: float(summary[key])}


def _rel(path: Path) -> str:
    """A package file relative to the checkout root (where dvc.yaml lives)."""
    return path.relative_to(PACKAGE_DIR.parent).as_posix()


def _code(kind: str, method: str) -> list[str]:
    stage = CODE_STAGE[kind]
    return [_rel(p) for p in stage_files(stage, method)] if stage in STAGE_ENTRIES else []


def _params_deps(files: dict[str, dict[str, Any]], keys: tuple[str, ...], overridden: set[str]) -> list[dict[str, list[str]]]:
    """DVC ``params`` entries: per parameter file, the keys of ``keys`` it sets. A key the
    stage overrides on its command line (an ablation row) is left out; a section holding
    one is listed key by key. Keys no file sets take their default; a file that starts
    setting one makes ``dvc.yaml`` stale (``hvc dvc-yaml --check``)."""
    out = []
    for path, data in files.items():
        flat = flatten(data)
        found: list[str] = []
        for key in keys:
            if key in overridden:
                continue
            inside = [k for k in flat if k == key or k.startswith(key + ".")]
            if not inside:
                continue
            if any(o.startswith(key + ".") for o in overridden):
                found += [k for k in inside if k not in overridden and not any(k.startswith(o + ".") for o in overridden)]
            else:
                found.append(key)
        if found:
            out.append({path: found})
    return out


def _stage(cmd: list[str], deps: list[str], params: list, outs: list, metrics: list | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"cmd": " ".join(cmd)}
    if deps:
        st["deps"] = list(dict.fromkeys(deps))
    if params:
        st["params"] = params
    st["outs"] = outs
    if metrics:
        st["metrics"] = metrics
    return st


def _method(p: Params) -> str:
    return getattr(p, "method", "hvc")


def _q(s: str) -> str:
    return shlex.quote(str(s))


def dvc_stages(param_files: list[str], p: Params) -> dict[str, dict[str, Any]]:
    """The DVC stages of every job the Snakemake workflow runs for these parameters.

    Args:
        param_files: the parameter files, relative to the repository root, in merge order
            (every stage reads them all, as the Snakemake rules do).
        p: the merged parameters (:func:`hvc.config.params.load_params` of ``param_files``).
    Returns:
        stage name → DVC stage (``cmd``, ``deps``, ``params``, ``outs``, ``metrics``), in
        order: ``plan`` (the staleness check), ``fetch-<dataset>``, ``demo_data``,
        ``shards-<setting>``, ``train-<experiment>``, then per experiment and benchmark
        ``propagate-``, ``submission-``, ``evaluate-``, ``flow-``, and ``tables``, ``figures``.
    Raises:
        ParamsError: a parameter file is unreadable; or two experiments share a stage name;
            or ``data.root`` is outside the repository while datasets must be fetched.
    """
    files = {}
    for f in param_files:
        try:
            files[f] = read_yaml(Path(f).read_text(encoding="utf-8"), f) or {}
        except OSError as e:
            raise ParamsError(f"{f}: cannot read the parameter file ({e.strerror or e})") from None
    params_args = [f"--params {_q(f)}" for f in param_files]
    experiments = plan(p)
    requests = score_requests(p)
    trained = [e for e in experiments.values() if e.trained]
    names = {key: slug(key) for key in experiments}
    if len(set(names.values())) != len(names):
        raise ParamsError(f"experiment keys {sorted(names)} give the same DVC stage name twice")

    def hvc(sub: str, exp: Experiment | None = None) -> list[str]:
        return ["hvc", sub, *params_args, *(f"--set {_q(a)}" for a in (exp.set_args if exp else []))]

    def params_of(kind: str, exp: Experiment | None = None) -> list:
        keys = STAGE_PARAMS[kind]
        if kind == "shards" and exp is not None and exp.params.data.train_set != "demo":
            keys = keys + ("data.root",)
        if kind == "propagate" and exp is not None and exp.key.removesuffix("+semantic") == "authors":
            keys = keys + ("authors_checkpoint",)
        overridden = set(flatten(exp.overrides)) if exp is not None else set()
        return _params_deps(files, keys, overridden)

    stages: dict[str, dict[str, Any]] = {}
    # the staleness check: re-run whenever a parameter file or the package changes
    stages["plan"] = {
        "cmd": " ".join(["hvc", "dvc-yaml", *params_args, "--check", "--stamp", PLAN_STAMP]),
        "deps": [PACKAGE_DIR.name],
        "params": [{f: []} for f in param_files],
        "outs": [{PLAN_STAMP: {"cache": False}}],
    }

    # datasets: one fetch stage each (the Snakemake `fetch` rule); its stamp is the dependency
    def dataset_of(benchmark: str) -> str:
        return get_benchmark(benchmark).folder.split("/")[0]

    from hvc.data.shards import TRAIN_SET_DATASETS

    datasets = sorted(
        {dataset_of(b) for _, b in requests if b in p.data.benchmarks and b != "demo"}
        | {TRAIN_SET_DATASETS[e.params.data.train_set] for e in trained if e.params.data.train_set != "demo"}
    )
    stamps = {}
    for d in datasets:
        stamp = os.path.join(p.data.root, d, STAMP_NAME)
        if os.path.isabs(stamp) or os.path.normpath(stamp).startswith(".."):
            raise ParamsError(
                f"data.root = {p.data.root!r}: DVC stages write inside the repository only; use a data.root inside it "
                "and name datasets you already have elsewhere in data.sources (linked, not copied)"
            )
        stamps[d] = stamp
        source = p.data.sources.get(d)
        cmd = ["hvc", "fetch", d, "--root", _q(p.data.root)] + (["--from", _q(source)] if source else [])
        stages[f"fetch-{d}"] = _stage(
            cmd, [PLAN_STAMP] + _code("fetch", _method(p)), params_of("fetch"),
            [{stamp: {"cache": False, "persist": True}}],
        )  # fmt: skip

    need_demo = "demo" in {b for _, b in requests} or any(e.params.data.train_set == "demo" for e in trained)
    if need_demo:
        stages["demo_data"] = _stage(
            hvc("demo-data") + ["--out", DATA], [PLAN_STAMP] + _code("demo_data", _method(p)), params_of("demo_data"), [DATA]
        )

    def bench_deps(benchmark: str) -> list[str]:
        return [DATA] if benchmark == "demo" else [stamps[dataset_of(benchmark)]]

    def bench_root(benchmark: str) -> str:
        return str(benchmark_root(benchmark, p.data.root, DATA))

    # shards: one stage per distinct training-set setting, named by its experiment
    shards_of: dict[str, str] = {}  # experiment key -> shards folder
    by_id: dict[str, Experiment] = {}
    for e in sorted(trained, key=lambda e: (e.key != "hvc", len(e.overrides), e.key)):
        by_id.setdefault(e.ids["shards"], e)
    for e in trained:
        owner = by_id[e.ids["shards"]]
        shards_of[e.key] = SHARDS.format(name=names[owner.key])
    for owner in by_id.values():
        out = SHARDS.format(name=names[owner.key])
        demo = owner.params.data.train_set == "demo"
        source = DATA if demo else p.data.root
        deps = [DATA] if demo else [stamps[TRAIN_SET_DATASETS[owner.params.data.train_set]]]
        stages[f"shards-{names[owner.key]}"] = _stage(
            hvc("shards", owner) + ["--input", _q(source), "--out", out],
            deps + _code("shards", _method(owner.params)), params_of("shards", owner), [out],
        )  # fmt: skip

    # one trained model per experiment (the `hvc+semantic` row reuses the model of `hvc`)
    model_of: dict[str, str] = {}
    for e in trained:
        if e.merge_semantic and e.key.removesuffix("+semantic") in experiments:
            continue
        out = MODEL.format(name=names[e.key])
        model_of[e.key] = out
        n = e.params.train.gpus
        launcher = ["torchrun", "--standalone", "--nproc_per_node", str(n), "-m", "hvc.cli"] if n > 1 and e.params.device != "cpu" else ["hvc"]
        stages[f"train-{names[e.key]}"] = _stage(
            launcher + hvc("train", e)[1:] + ["--shards", shards_of[e.key], "--out", out],
            [shards_of[e.key]] + _code("train", _method(e.params)), params_of("train", e), [out],
        )  # fmt: skip
    for e in trained:  # merged rows use the plain model of the same setting
        if e.key not in model_of:
            model_of[e.key] = model_of[e.key.removesuffix("+semantic")]

    def encoder_args(e: Experiment) -> tuple[list[str], list[str]]:
        """--encoder (and --merge-semantic) of `hvc propagate`, and the files it reads."""
        merge = ["--merge-semantic"] if e.merge_semantic else []
        deps = []
        if e.key == "semantic" or e.merge_semantic:
            deps.append(str(p.propagation.semantic_checkpoint))
        if e.key.removesuffix("+semantic") == "authors":
            deps.append(str(p.authors_checkpoint))
        if not e.trained:
            return ["--encoder", e.key.removesuffix("+semantic")] + merge, deps
        model = model_of[e.key]
        return ["--encoder", f"{model}/encoder.pt"] + merge, [model] + deps

    score_args: list[str] = []
    score_deps: list[str] = []
    for key, source in requests:
        e = experiments[key]
        name = names[key]
        if source == "train":
            model = model_of[key]
            score_args.append(f"--score {_q(f'{key}:train={model}/train.json')}")
            score_deps.append(model)
            continue
        if source.startswith("flow_"):
            b = source.removeprefix("flow_")
            out = FLOW.format(name=name, benchmark=b)
            stages[f"flow-{name}-{b}"] = _stage(
                hvc("flow") + ["--model", model_of[key], "--benchmark", b, "--data", _q(bench_root(b)), "--out", out],
                [model_of[key]] + bench_deps(b) + _code("flow", _method(e.params)), params_of("flow"), [out],
            )  # fmt: skip
            score_args.append(f"--score {_q(f'{key}:{source}={out}')}")
            score_deps.append(out)
            continue
        b = source
        pred = PREDICTIONS.format(name=name, benchmark=b)
        enc, enc_deps = encoder_args(e)
        stages[f"propagate-{name}-{b}"] = _stage(
            hvc("propagate") + enc + ["--benchmark", b, "--data", _q(bench_root(b)), "--out", pred],
            enc_deps + bench_deps(b) + _code("propagate", _method(e.params)), params_of("propagate", e), [pred],
        )  # fmt: skip
        server: list[str] = []
        server_deps: list[str] = []
        if get_benchmark(b).scoring == "server":
            archive = SUBMISSIONS.format(name=name, benchmark=b)
            stages[f"submission-{name}-{b}"] = _stage(
                hvc("submission") + ["--benchmark", b, "--data", _q(bench_root(b)), "--predictions", pred, "--out", archive],
                [pred] + bench_deps(b) + _code("submission", _method(e.params)), params_of("submission"), [archive],
            )  # fmt: skip
            saved = SERVER_SCORES.format(name=name, benchmark=b)
            server = ["--archive", archive, "--server-scores", saved]
            server_deps = [archive] + ([saved] if os.path.exists(saved) else [])  # as Snakemake: once saved
        scores = SCORES.format(name=name, benchmark=b)
        metrics = METRICS.format(name=name, benchmark=b)
        toolkit = scores.removesuffix(".json")
        stages[f"evaluate-{name}-{b}"] = _stage(
            hvc("evaluate") + ["--benchmark", b, "--data", _q(bench_root(b)), "--predictions", pred, *server,
                               "--out", scores, "--toolkit-csv", toolkit, "--metrics", metrics],
            [pred] + bench_deps(b) + server_deps + _code("evaluate", _method(e.params)), params_of("evaluate"),
            [scores, scores.removesuffix(".json") + ".objects.json", toolkit], [{metrics: {"cache": False}}],
        )  # fmt: skip
        score_args.append(f"--score {_q(f'{key}:{b}={scores}')}")
        score_deps.append(scores)

    stages["tables"] = _stage(
        hvc("tables") + score_args + ["--out", TABLES], score_deps + _code("tables", _method(p)), params_of("tables"), [TABLES]
    )

    # figures: overlays of the trained and random encoders' masks and parts (as the Snakefile)
    overlays = [
        (key, b, PREDICTIONS.format(name=names[key], benchmark=b))
        for key in ("hvc", "random") if key in experiments
        for b in p.data.benchmarks if (key, b) in set(requests) and get_benchmark(b).task != "pose"
    ]  # fmt: skip
    base_model = model_of["hvc"]
    demo_arg = ["--demo", DATA] if need_demo else []
    stages["figures"] = _stage(
        hvc("figures") + [f"--predictions {_q(f'{k}:{b}={d}')}" for k, b, d in overlays] + demo_arg
        + ["--tables", TABLES, "--model", base_model, "--out", FIGURES],
        [d for _, _, d in overlays] + [x for b in p.data.benchmarks for x in bench_deps(b)] + [TABLES, base_model]
        + _code("figures", _method(p)),
        params_of("figures"), [FIGURES],
    )  # fmt: skip
    return stages


HEADER = """\
# Generated by `hvc dvc-yaml{args}` from the experiment plan ({files}); do not edit.
# After changing ablations, baselines, data.benchmarks, the training set or the parameter
# files, run it again (the `plan` stage stops `dvc repro` while this file is stale).
# Every stage calls the same `hvc` subcommand as its Snakemake rule; DVC's outputs live
# under artifacts/dvc/, metrics/ and results/dvc/ (Snakemake's under artifacts/<kind>/<id>/
# and results/tables, results/figures); metrics/<experiment>/<benchmark>.json holds the
# headline score `dvc exp show` lists (J&F, J for VOST, mIoU for VIP, PCK@0.1 for JHMDB).
"""


def dvc_yaml_text(param_files: list[str], p: Params) -> str:
    """The text of ``dvc.yaml`` for these parameter files (deterministic: same files, same
    package, same text). Raises as :func:`dvc_stages`."""
    stages = dvc_stages(param_files, p)
    doc: dict[str, Any] = {"stages": stages}
    if "train-hvc" in stages:  # training curves (dvclive) and the training summary of the base model
        doc["plots"] = [{f"{MODEL.format(name='hvc')}/dvclive/plots/metrics": {"x": "step"}}]
        doc["metrics"] = [f"{MODEL.format(name='hvc')}/train.json"]
    args = "".join(f" -p {f}" for f in param_files) if param_files != ["params.yaml"] else ""
    body = yaml.safe_dump(doc, sort_keys=False, width=100_000, default_flow_style=False)
    return HEADER.format(args=args, files=", ".join(param_files)) + body


def stale_report(current: str, expected: str, path: str) -> str | None:
    """None when ``current`` (the checked-in text) equals ``expected``; else one line naming
    the stages added, removed and changed."""
    if current == expected:
        return None
    try:
        have = (yaml.safe_load(current) or {}).get("stages", {}) or {}
    except yaml.YAMLError:
        have = {}
    want = yaml.safe_load(expected)["stages"]
    parts = []
    for label, names in (
        ("missing", [n for n in want if n not in have]),
        ("not in the plan", [n for n in have if n not in want]),
        ("differ", [n for n in want if n in have and have[n] != want[n]]),
    ):
        if names:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            parts.append(f"stages {label}: {shown}")
    if not parts:
        diff = next((ln for ln in difflib.unified_diff(current.splitlines(), expected.splitlines(), lineterm="", n=0) if ln[:1] in "+-" and ln[:3] not in ("+++", "---")), "")
        parts.append(f"text differs ({diff.strip()[:120]})")
    return f"{path} is stale for these parameters ({'; '.join(parts)}): run `hvc dvc-yaml` again and commit it"
