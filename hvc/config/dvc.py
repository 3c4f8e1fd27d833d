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
content addressing, and ``dvc exp run -S hvc.alpha=0.5`` edits ``params.yaml`` without
regenerating ``dvc.yaml``. So DVC's stages and outputs are named by experiment key
(``hvc``, ``random``, ``hvc.alpha=0.1``, ...), under their own roots, where the two tools
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

from hvc.config.benchmarks import benchmark_root, get_benchmark
from hvc.config.code import PACKAGE_DIR, STAGE_ENTRIES
from hvc.config.datasets import STAMP_NAME, TRAIN_SET_DATASETS
from hvc.config.ids import NOT_READ, StageReads, stage_reads
from hvc.config.params import Params, ParamsError, read_yaml
from hvc.config.plan import Experiment, flatten, overlay_keys, plan, score_requests, shards_owners

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
CLI = PACKAGE_DIR.name  # the console script, named after the package
RUNS = "results/dvc/runs.csv"  # the tidy results (a copy of the tables stage's runs.csv)
PLAN_MESSAGE = "dvc.yaml matches the experiment plan of the parameter files\n"
# CPU threads of the stages that compute, as the Snakemake rules' `threads:` (COMPUTE_THREADS
# in workflow/rules/common.smk; `hvc --threads` lowers it to the cores this process may use)
COMPUTE_THREADS = 8
# Bytecode is not code a stage runs: left out of the `plan` stage's folder dependency
# (written to .dvcignore by `hvc dvc-yaml`, which DVC reads when it hashes a folder)
DVCIGNORE_PATTERNS = ("__pycache__/", "*.pyc")

# The headline number of each scoring, as `dvc exp show` shows it: (column, summary key)
HEADLINES = {
    "davis": ("J&F", "JF_mean"),
    "vost": ("J", "J_mean"),
    "miou": ("mIoU", "mIoU"),
    "pck": ("PCK@0.1", "PCK@0.1"),
}


def slug(key: str) -> str:
    """An experiment key as a DVC stage-name part and folder name.

    DVC stage names allow letters, digits, ``_`` and ``-`` only: ``=`` becomes ``-``, ``.``
    ``_``, ``,`` ``--`` and ``+`` ``-with-`` (``"hvc.alpha=0.1"`` → ``"hvc_alpha-0_1"``,
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


def _code(reads: StageReads) -> list[str]:
    return reads.code_files() if reads.stage in STAGE_ENTRIES else []


def _params_deps(files: dict[str, dict[str, Any]], keys: tuple[str, ...], dropped: set[str]) -> list[dict[str, list[str]]]:
    """DVC ``params`` entries: per parameter file, the keys of ``keys`` it sets. A dropped
    key (one the stage overrides on its command line, e.g. an ablation row, or one it does
    not read, :data:`hvc.config.ids.NOT_READ`) is left out; a section holding one is listed
    key by key. Keys no file sets take their default; a file that starts setting one makes
    ``dvc.yaml`` stale (``hvc dvc-yaml --check``)."""
    out = []
    for path, data in files.items():
        flat = flatten(data)
        found: list[str] = []
        for key in keys:
            if key in dropped:
                continue
            inside = [k for k in flat if k == key or k.startswith(key + ".")]
            if not inside:
                continue
            if any(o.startswith(key + ".") for o in dropped):
                found += [k for k in inside if k not in dropped and not any(k.startswith(o + ".") for o in dropped)]
            else:
                found.append(key)
        if found:
            out.append({path: found})
    return out


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
    return _Pipeline(param_files, p).stages


class _Pipeline:
    """Builds the stages of :func:`dvc_stages`, in the order the jobs run."""

    def __init__(self, param_files: list[str], p: Params) -> None:
        self.files = {}
        for f in param_files:
            try:
                self.files[f] = read_yaml(Path(f).read_text(encoding="utf-8"), f) or {}
            except OSError as e:
                raise ParamsError(f"{f}: cannot read the parameter file ({e.strerror or e})") from None
        self.p = p
        self.params_args = [f"--params {_q(f)}" for f in param_files]
        self.experiments = plan(p)
        self.trained = [e for e in self.experiments.values() if e.trained]
        self.names = {key: slug(key) for key in self.experiments}
        if len(set(self.names.values())) != len(self.names):
            raise ParamsError(f"experiment keys {sorted(self.names)} give the same DVC stage name twice")
        self.need_demo = "demo" in p.data.benchmarks or any(e.params.data.train_set == "demo" for e in self.trained)
        self.stages: dict[str, dict[str, Any]] = {}
        self.score_args: list[str] = []
        self.score_deps: list[str] = []
        self._plan_stage(param_files)
        self._fetch_stages()
        if self.need_demo:
            self._add("demo_data", "demo_data", self.hvc("demo-data") + ["--out", DATA], [PLAN_STAMP], [DATA])
        self._shards_stages()
        self._train_stages()
        for key, source in score_requests(p):
            self._score_stages(key, source)
        tables_cmd = self.hvc("tables") + self.score_args + ["--out", TABLES, "--runs-csv", RUNS]
        self._add("tables", "tables", tables_cmd, self.score_deps, [TABLES, RUNS])
        self._figures_stage()

    # helpers
    def hvc(self, sub: str, exp: Experiment | None = None) -> list[str]:
        """``hvc <sub> --params ...`` and, for an ablation row, its ``--set`` overrides."""
        return [CLI, sub, *self.params_args, *(f"--set {_q(a)}" for a in (exp.set_args if exp else []))]

    def _add(self, name: str, kind: str, cmd: list[str], deps: list[str], outs: list, exp: Experiment | None = None, metrics: list | None = None) -> None:
        """One stage: its command, upstream outputs plus its code files, params and outputs,
        all from what the stage reads (:func:`hvc.config.ids.stage_reads`)."""
        params_ = exp.params if exp is not None else self.p
        method = exp.encoder_method if exp is not None and kind == "propagate" else params_.method
        reads = stage_reads(kind, params_, method)  # a DVC stage's kind is its stage's name
        st: dict[str, Any] = {"cmd": " ".join(cmd), "deps": list(dict.fromkeys(deps + _code(reads)))}
        params = self._params_of(kind, reads, exp)
        if params:
            st["params"] = params
        st["outs"] = outs
        if metrics:
            st["metrics"] = metrics
        self.stages[name] = st

    def _params_of(self, kind: str, reads: StageReads, exp: Experiment | None) -> list:
        keys = reads.keys
        if kind == "propagate":
            keys = (*keys, "device") + (("authors_checkpoint",) if exp is not None and exp.key.removesuffix("+semantic") == "authors" else ())
        overridden = set(flatten(exp.overrides)) if exp is not None else set()
        return _params_deps(self.files, keys, overridden | set(reads.exclude) | NOT_READ)

    def _dataset_of(self, benchmark: str) -> str:
        return get_benchmark(benchmark).folder.split("/")[0]

    def bench_deps(self, benchmark: str) -> list[str]:
        """The demo data, or the stamp of the benchmark's dataset."""
        return [DATA] if benchmark == "demo" else [self._stamp(self._dataset_of(benchmark))]

    def bench_root(self, benchmark: str) -> str:
        return _q(str(benchmark_root(benchmark, self.p.data.root, DATA)))

    def _stamp(self, dataset: str) -> str:
        return os.path.join(self.p.data.root, dataset, STAMP_NAME)

    # stages, in the order they run
    def _plan_stage(self, param_files: list[str]) -> None:
        """The staleness check: re-run whenever a parameter file or the package changes; its
        output (constant text) is a dependency of every first stage."""
        self.stages["plan"] = {
            "cmd": " ".join([CLI, "dvc-yaml", *self.params_args, "--check", "--stamp", PLAN_STAMP]),
            "deps": [PACKAGE_DIR.name],
            "params": [{f: []} for f in param_files],
            "outs": [PLAN_STAMP],  # cached: `dvc pull` restores it in a clone, so nothing re-runs there
        }

    def _fetch_stages(self) -> None:
        """One per dataset (the Snakemake `fetch` rule); its stamp is what later stages depend on."""
        p = self.p
        datasets = {self._dataset_of(b) for b in p.data.benchmarks if b != "demo"}
        datasets |= {TRAIN_SET_DATASETS[e.params.data.train_set] for e in self.trained if e.params.data.train_set != "demo"}
        for d in sorted(datasets):
            stamp = self._stamp(d)
            if os.path.isabs(stamp) or os.path.normpath(stamp).startswith(".."):
                raise ParamsError(
                    f"data.root = {p.data.root!r}: DVC stages write inside the repository only; use a data.root inside "
                    "it and name datasets you already have elsewhere in data.sources (linked, not copied)"
                )
            source = p.data.sources.get(d)
            cmd = [CLI, "fetch", d, "--root", _q(p.data.root)] + (["--from", _q(source)] if source else [])
            self._add(f"fetch-{d}", "fetch", cmd, [PLAN_STAMP], [{stamp: {"cache": False, "persist": True}}])

    def _shards_stages(self) -> None:
        """One per distinct training-set setting, named by the experiment that owns it."""
        owners = shards_owners(self.experiments)
        self.shards_of = {e.key: SHARDS.format(name=self.names[owners[e.ids["shards"]].key]) for e in self.trained}
        for owner in owners.values():
            out = SHARDS.format(name=self.names[owner.key])
            train_set = owner.params.data.train_set
            source, dep = (DATA, DATA) if train_set == "demo" else (self.p.data.root, self._stamp(TRAIN_SET_DATASETS[train_set]))
            cmd = self.hvc("shards", owner) + ["--input", _q(source), "--out", out]
            self._add(f"shards-{self.names[owner.key]}", "shards", cmd, [dep], [out], owner)

    def _train_stages(self) -> None:
        """One trained model per experiment; a merged row (``hvc+semantic``) uses the plain
        model of its setting, as Snakemake does."""
        self.model_of: dict[str, str] = {}
        for e in self.trained:
            if e.merge_semantic and e.key.removesuffix("+semantic") in self.experiments or e.model_of in self.experiments:
                continue  # the plain model of its setting, or the model it propagates another way
            out = MODEL.format(name=self.names[e.key])
            self.model_of[e.key] = out
            n = e.params.train.gpus
            launcher = [CLI]
            if n > 1 and e.params.device != "cpu":  # DDP, as the Snakemake rule's launcher
                launcher = ["torchrun", "--standalone", "--nproc_per_node", str(n), "-m", "hvc.cli"]
            cmd = launcher + self.hvc("train", e)[1:] + ["--shards", self.shards_of[e.key], "--out", out]
            cmd += ["--threads", str(1 + e.params.train.workers)]  # main process + loader workers, as the rule
            self._add(f"train-{self.names[e.key]}", "train", cmd, [self.shards_of[e.key]], [out], e)
        for e in self.trained:
            self.model_of.setdefault(e.key, self.model_of.get(e.model_of or e.key.removesuffix("+semantic"), ""))

    def _encoder(self, e: Experiment) -> tuple[list[str], list[str]]:
        """--encoder (and --merge-semantic) of `hvc propagate`, and the files it reads."""
        merge = ["--merge-semantic"] if e.merge_semantic else []
        deps = []
        if e.key == "semantic" or e.merge_semantic:
            deps.append(str(self.p.propagation.semantic_checkpoint))
        if e.key.removesuffix("+semantic") == "authors":
            deps.append(str(self.p.authors_checkpoint))
        if not e.trained:  # a baseline, or a method at random initialisation
            return ["--encoder", "random" if e.random_init else e.key.removesuffix("+semantic")] + merge, deps
        model = self.model_of[e.key]
        return ["--encoder", f"{model}/encoder.pt"] + merge, [model] + deps

    def _score_stages(self, key: str, source: str) -> None:
        """What one cell group of the tables needs: the model's train.json (Table 8), the flow
        comparison (Table 11), or propagation and scoring on a benchmark."""
        e, name = self.experiments[key], self.names[key]
        if source == "train":
            self._score(key, source, f"{self.model_of[key]}/train.json", self.model_of[key])
            return
        if source.startswith("flow_"):
            b = source.removeprefix("flow_")
            out = FLOW.format(name=name, benchmark=b)
            cmd = self.hvc("flow") + ["--model", self.model_of[key], "--benchmark", b, "--data", self.bench_root(b), "--out", out]
            cmd += ["--threads", str(COMPUTE_THREADS)]
            self._add(f"flow-{name}-{b}", "flow", cmd, [self.model_of[key]] + self.bench_deps(b), [out], e)
            self._score(key, source, out, out)
            return
        b = source
        pred = PREDICTIONS.format(name=name, benchmark=b)
        enc, enc_deps = self._encoder(e)
        # a trained experiment (or a method's random initialisation) propagates with its own overrides
        # (LIIR: its propagation preset and inference), as in Snakemake
        cmd = self.hvc("propagate", e if e.trained or e.random_init else None) + enc + ["--benchmark", b, "--data", self.bench_root(b), "--out", pred]
        cmd += ["--threads", str(COMPUTE_THREADS)]
        self._add(f"propagate-{name}-{b}", "propagate", cmd, enc_deps + self.bench_deps(b), [pred], e)
        server, server_deps = self._submission_stage(e, b, pred)
        scores = SCORES.format(name=name, benchmark=b)
        metrics = METRICS.format(name=name, benchmark=b)
        toolkit = scores.removesuffix(".json")
        cmd = self.hvc("evaluate") + ["--benchmark", b, "--data", self.bench_root(b), "--predictions", pred, *server]
        cmd += ["--out", scores, "--toolkit-csv", toolkit, "--metrics", metrics, "--threads", str(COMPUTE_THREADS)]
        outs = [scores, f"{toolkit}.objects.json", toolkit]
        deps = [pred] + self.bench_deps(b) + server_deps
        self._add(f"evaluate-{name}-{b}", "evaluate", cmd, deps, outs, e, metrics=[{metrics: {"cache": False}}])
        self._score(key, b, scores, scores)

    def _submission_stage(self, e: Experiment, b: str, pred: str) -> tuple[list[str], list[str]]:
        """Server-scored benchmarks: the archive stage; the evaluate arguments and deps
        (the server's score file once the user saved it, as Snakemake decides at parse time)."""
        if get_benchmark(b).scoring != "server":
            return [], []
        name = self.names[e.key]
        archive = SUBMISSIONS.format(name=name, benchmark=b)
        cmd = self.hvc("submission") + ["--benchmark", b, "--data", self.bench_root(b), "--predictions", pred, "--out", archive]
        self._add(f"submission-{name}-{b}", "submission", cmd, [pred] + self.bench_deps(b), [archive], e)
        saved = SERVER_SCORES.format(name=name, benchmark=b)
        return ["--archive", archive, "--server-scores", saved], [archive] + ([saved] if os.path.exists(saved) else [])

    def _score(self, key: str, source: str, path: str, dep: str) -> None:
        self.score_args.append(f"--score {_q(f'{key}:{source}={path}')}")
        self.score_deps.append(dep)

    def trained_models(self) -> dict[str, str]:
        """Experiment key → model folder of every model trained (one key per folder)."""
        return {key: model for key, model in self.model_of.items() if model and not key.endswith("+semantic") and not self.experiments[key].model_of}

    def _figures_stage(self) -> None:
        """Overlays of the masks and parts of HVC, the random encoder and every other trained
        method, the tables' bar charts, every model's loss curve and the base model's
        pseudo-dynamic signals (as the Snakemake rule)."""

        p, requests = self.p, set(score_requests(self.p))
        overlays = [
            (key, b, PREDICTIONS.format(name=self.names[key], benchmark=b))
            for key in overlay_keys(self.experiments, requests, p.data.benchmarks)
            for b in p.data.benchmarks if (key, b) in requests and get_benchmark(b).task != "pose"
        ]  # fmt: skip
        model, curves = self.model_of[p.method], self.trained_models()
        cmd = self.hvc("figures") + [f"--predictions {_q(f'{k}:{b}={d}')}" for k, b, d in overlays]
        cmd += (["--demo", DATA] if self.need_demo else []) + ["--tables", TABLES, "--model", model]
        cmd += [f"--curves {_q(f'{k}={d}')}" for k, d in curves.items()] + ["--out", FIGURES]
        cmd += ["--threads", str(COMPUTE_THREADS)]
        deps = [d for _, _, d in overlays] + [x for b in p.data.benchmarks for x in self.bench_deps(b)] + [TABLES, model]
        deps += list(curves.values())
        self._add("figures", "figures", cmd, deps, [FIGURES])


HEADER = """\
# Generated by `{command}` from the experiment plan ({files}); do not edit.
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
    pipeline = _Pipeline(param_files, p)
    stages = pipeline.stages
    doc: dict[str, Any] = {"stages": stages}
    base = slug(p.method)
    if f"train-{base}" in stages:  # training curves (dvclive, x: optimizer step) and training summaries
        models = pipeline.trained_models()
        loss = {f"{d}/dvclive/plots/metrics/train/loss.tsv": "loss" for d in models.values()}  # each labelled by its folder: the setting
        doc["plots"] = [
            {"loss": {"x": "step", "y": loss, "title": "training loss of every trained model", "x_label": "optimizer step"}},
            {f"{MODEL.format(name=base)}/dvclive/plots/metrics": {"x": "step"}},
            f"{FIGURES}/loss_curves.png",  # the same curves, labelled with method and setting
        ]
        doc["metrics"] = [f"{d}/train.json" for d in models.values()]
    body = yaml.safe_dump(doc, sort_keys=False, width=100_000, default_flow_style=False)
    return HEADER.format(command=regenerate_command(param_files), files=", ".join(param_files)) + body


def ensure_dvcignore(folder: Path) -> bool:
    """Add the bytecode patterns (:data:`DVCIGNORE_PATTERNS`) to ``folder/.dvcignore`` when
    missing, so that the ``plan`` stage's dependency on the package folder ignores
    ``__pycache__`` (DVC leaves ignored files out of a folder's hash). Returns whether the
    file was changed."""
    path = Path(folder) / ".dvcignore"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    missing = [p for p in DVCIGNORE_PATTERNS if p not in text.splitlines()]
    if not missing:
        return False
    from hvc.io import write_text

    write_text(path, text + ("" if not text or text.endswith("\n") else "\n") + "".join(f"{p}\n" for p in missing))
    return True


def regenerate_command(param_files: list[str]) -> str:
    """The ``hvc dvc-yaml`` command line that writes the file for these parameter files."""
    return "hvc dvc-yaml" + ("".join(f" -p {_q(f)}" for f in param_files) if param_files != ["params.yaml"] else "")


def stale_report(current: str, expected: str, path: str, command: str = "hvc dvc-yaml") -> str | None:
    """None when ``current`` (the checked-in text) equals ``expected``; else one line naming
    the stages missing, extra and changed, and ``command``, which writes the file anew."""
    if current == expected:
        return None
    try:
        have = yaml.safe_load(current)
    except yaml.YAMLError:
        have = None
    have = (have.get("stages") or {}) if isinstance(have, dict) else {}
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
    return f"{path} is stale for these parameters ({'; '.join(parts)}): run `{command}` again and commit it"
