"""The paper's tables, with our numbers beside the published ones.

Every cell is ours (from a score file), a published value, or empty with the reason said
once in the notes; the published value, where the paper has one
(hvc/config/published.yaml), stands in its own column labelled "paper". Tables are built
as pandas DataFrames: Markdown, LaTeX and HTML show the formatted values ("–" where
empty), the CSV the numbers (empty where empty). Beside them, ``runs.csv``: one row per
(experiment, benchmark), the tidy form of every result (:func:`runs_frame`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hvc.config.plan import columns, missing_checkpoint, published_tables, row_experiment, run_rows, source_available, table_names
from hvc.io import atomic_dir, write_json, write_text
from hvc.config.params import Params
from hvc.config.benchmarks import get_benchmark
from hvc.config.code import provenance
from hvc.config.registry import DEFAULT_METHOD, method_spec
from hvc.report.seeds import MeanStd, aggregate_seeds, seeds_note

# metric → (column label, how a value is shown); fractions are shown in percent
METRICS = {
    "JF_mean": ("J&F", "percent"),
    "J_mean": ("J mean", "percent"),
    "J_recall": ("J recall", "percent"),
    "J_decay": ("J decay", "percent"),
    "F_mean": ("F mean", "percent"),
    "F_recall": ("F recall", "percent"),
    "F_decay": ("F decay", "percent"),
    "J_last_mean": ("J_last mean", "percent"),
    "J_last_recall": ("J_last recall", "percent"),
    "overall": ("Mean", "percent"),
    "J_seen": ("J seen", "percent"),
    "F_seen": ("F seen", "percent"),
    "J_unseen": ("J unseen", "percent"),
    "F_unseen": ("F unseen", "percent"),
    "mIoU": ("mIoU", "percent"),
    "PCK@0.1": ("PCK@0.1", "percent"),
    "PCK@0.2": ("PCK@0.2", "percent"),
    "steps": ("iterations", "count"),
    "train_hours": ("time (h)", "number"),
    "peak_gpu_memory_gb": ("GPU memory (GB)", "number"),
    "forward_epe": ("forward EPE", "number"),
    "backward_epe": ("backward EPE", "number"),
}
# column names of the sources that are not benchmarks (benchmarks: their registry entry's display)
SOURCE_NAMES = {"train": "Training"}


def source_name(source: str) -> str:
    """A column source's name in the tables: a benchmark's display name (``flow_<benchmark>``:
    the benchmark's), or "Training"."""
    if source in SOURCE_NAMES:
        return SOURCE_NAMES[source]
    return get_benchmark(source.removeprefix("flow_")).display


# how a value column is shown (format spec; "" for text); the CSV keeps the unformatted number
FORMATS = {"percent": ".1f", "count": ",.0f", "number": ".2f"}
PUBLISHED_FORMATS = {"percent": ".1f", "count": ",.0f", "number": "g"}  # as the paper prints them


def _ours(metric: str, value: float | None) -> float | None:
    """A value of ours in the unit its column shows: fractions become percent."""
    if value is None:
        return None
    if isinstance(value, MeanStd):  # a mean over seeds keeps its standard deviation
        scaled = value.scaled(100) if METRICS[metric][1] == "percent" else value
        return MeanStd(round(float(scaled), 10), round(scaled.std, 10), scaled.n)
    return round(100 * float(value), 10) if METRICS[metric][1] == "percent" else float(value)  # 71.9, not 71.89999999999999


def _header(cols: list[tuple[str, str, bool]]) -> tuple[list[str], list[str]]:
    """Column names and format specs of a table: the label, then per column ours and,
    where the paper has a value, the paper's."""
    header, formats = ["Setting"], [""]
    for src, m, has_pub in cols:
        label = f"{source_name(src)} {METRICS[m][0]}"
        header.append(f"{label} (ours)")
        formats.append(FORMATS[METRICS[m][1]])
        if has_pub and src != "demo":
            header.append(f"{label} (paper)")
            formats.append(PUBLISHED_FORMATS[METRICS[m][1]])
    return header, formats


def _label_and_published(row: dict[str, Any], exp: Any, p: Params) -> tuple[list[Any], list]:
    """A row's first cell, its label (``{method}``: the trained method's display name; ``{train_set}``: the
    row's training set) and its published values: a row of the trained method shows the
    paper's values (HVC's) only when HVC is the trained method."""
    ours = "{method}" in row["label"]
    published = row.get("published") or [] if not ours or p.method == DEFAULT_METHOD else []
    train_set = exp.params.data.train_set if exp is not None else p.data.train_set
    label = row["label"].replace("{method}", method_spec(p.method).display).replace("{train_set}", train_set)
    return [label], published


def build_table(name: str, p: Params, scores: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """One table as ``{"title", "header", "formats", "rows", "notes"}``: each row is its
    label and one number (or None) per value column, in the unit the column shows
    (percent for scores), ``formats`` the format spec of each column.

    Args:
        name: a key of ``published.yaml``.
        p: the base params (to resolve each row's experiment).
        scores: {(experiment key, source): summary}: a benchmark's scores (fractions),
            ``"train"``: the model's train.json, ``"flow_<benchmark>"``: Table 11 errors.
    Returns:
        every cell is ours, a published value, or None; why a cell of ours is None is said
        once in ``notes``, naming the rows it concerns (or the columns, when it concerns
        every row), with the longer instructions (e.g. where a server's score file goes).
    """
    table = published_tables()[name]
    header, formats = _header(cols := columns(table, p))
    trained = {exp.key for _, _, exp in run_rows(p)}
    rows, notes, host = [], [], []
    for row in table["rows"]:
        if row.get("overrides", {}).get("method") == p.method:
            continue  # the trained method's own rows: its base rows show it
        exp = row_experiment(p, row)
        cells, published = _label_and_published(row, exp, p)
        for i, (src, m, has_pub) in enumerate(cols):
            summary = scores.get((exp.key, src)) if exp is not None else None
            if src == "train" and summary is not None and "train_seconds" in summary:
                summary = {**summary, "train_hours": summary["train_seconds"] / 3600}
            if exp is None:
                cells.append(f"not run: needs {missing_checkpoint(p, row)}")
            elif not source_available(src, p):
                cells.append(f"not run: {src.removeprefix('flow_')} not in data.benchmarks")
            elif row.get("encoder") in ("random", "imagenet") and row["encoder"] not in p.baselines:
                cells.append(f"not run: {row['encoder']} not in baselines")
            elif summary is None and row.get("overrides", {}).get("method") and exp.key not in trained:
                cells.append(f"not run: another method; list {row['overrides']['method']} in compare")
            elif summary is None and row.get("overrides") and exp.key not in trained:
                cells.append("not run: a training variant; list its ablation table (e.g. table7e) in ablations")
            elif summary is None:
                cells.append("no score file (missing score)")
            elif m in summary and summary[m] is not None:
                cells.append(_ours(m, summary[m]))
            elif "status" in summary:
                cells.append("needs the server's score (see the note on the submission)")
                if summary["status"] not in notes:
                    notes.append(summary["status"])
            elif m == "peak_gpu_memory_gb" and summary.get("peak_host_memory_gb") is not None:
                cells.append(_ours("peak_gpu_memory_gb", summary["peak_host_memory_gb"]))
                host.append((cells[0], summary.get("device") or "cpu"))
            elif m == "peak_gpu_memory_gb":
                cells.append(f"not measured: trained on {summary.get('device', 'CPU')}")
            else:
                cells.append(f"not in the score file: {m}")
            if has_pub and src != "demo":
                cells.append(published[i] if i < len(published) else None)
        rows.append(cells)
    notes = _empty_cell_notes(header, rows) + notes + [
        f"{label}: trained without a GPU ({device}); its memory value is the training process's peak host memory." for label, device in host
    ]
    return {"title": table["title"], "header": header, "formats": formats, "rows": rows, "notes": notes}


BUDGET_HEADER = [
    "Method", "initialisation", "inference", "J&F", "prediction", "training time (s)", "images/s", "peak memory (GB)",
    "memory", "steps", "samples seen", "phases run (steps)", "device",
]  # fmt: skip
BUDGET_FORMATS = ["", "", "", ".1f", "", ".1f", ".1f", ".2f", "", ",.0f", ",.0f", "", ""]
DEGENERATE = "degenerate: no foreground predicted"


def degenerate(summary: dict | None) -> bool:
    """Whether a DAVIS-scored prediction has no foreground pixel in any scored frame
    (``foreground_frames`` of :func:`hvc.eval.metrics.evaluate_folder` is 0): all
    background, e.g. a random encoder under raw dot products; its J&F (near 0) is no
    result. False when the score file does not say (written before the field existed)."""
    return bool(summary) and summary.get("foreground_frames") == 0 and bool(summary.get("scored_frames"))


def _budget_inference(exp: Any) -> str:
    """``own`` when the experiment's encoder is propagated with its method's own inference
    (registry entry ``inference``, ``propagation.inference: method``), else ``generic``."""
    own = method_spec(exp.params.method).inference is not None and exp.params.propagation.inference == "method"
    return "own" if own else "generic"


def budget_points(p: Params, scores: dict[tuple[str, str], dict]) -> list[dict[str, Any]]:
    """One record per experiment of the equal-budget comparison
    (:func:`hvc.config.plan.budget_experiments`: each method trained and at random
    initialisation, through its own inference and the generic propagation):
    ``key``, ``method``, ``display`` (the method's display name), ``label`` (display, plus
    "random init" and "(generic)" where they apply), ``trained``, ``inference`` ("own" or
    "generic"), ``jf`` (fraction; None when not scored or degenerate), ``degenerate``
    (:func:`degenerate`), ``seconds`` (training wall time), ``images_per_s``, ``peak_gb``
    (GPU peak when trained on a GPU, else the training process's peak resident memory)
    and ``memory_kind`` ("GPU"/"host"), ``steps``, ``samples``, ``phases`` (each phase's
    name and steps run, from ``train.json``), ``device``; None for what a file lacks and
    for the training columns of a random initialisation (nothing is trained)."""
    from hvc.config.plan import budget_benchmark, budget_experiments

    bench = budget_benchmark(p)
    out = []
    for key, exp in budget_experiments(p).items():
        train = (scores.get((key, "train")) or {}) if exp.trained else {}
        score = scores.get((key, bench)) if bench else None
        gpu = train.get("peak_gpu_memory_gb")
        method, inference = exp.params.method, _budget_inference(exp)
        display = method_spec(method).display
        label = display + " random init" * (not exp.trained) + " (generic)" * bool(inference == "generic" and method_spec(method).inference)
        out.append(
            {
                "key": key, "method": method, "display": display, "label": label,
                "trained": exp.trained, "inference": inference,
                "jf": None if degenerate(score) else (score or {}).get("JF_mean"),
                "degenerate": degenerate(score),
                "seconds": train.get("train_seconds"),
                "images_per_s": train.get("images_per_s"),
                "peak_gb": gpu if gpu is not None else train.get("peak_host_memory_gb"),
                "memory_kind": "GPU" if gpu is not None else "host",
                "steps": train.get("steps"),
                "samples": train.get("samples", None if train.get("steps") is None else train["steps"] * train.get("global_batch", exp.params.train.batch_size)),
                "phases": [(ph["name"], ph["steps"]) for ph in train.get("phases", [])] or None,
                "device": train.get("device"),
            }
        )  # fmt: skip
    return out


def _budget_row(r: dict[str, Any], seed: int) -> list[Any]:
    """One row of the equal-budget table from a :func:`budget_points` record."""
    return [
        r["display"], "trained" if r["trained"] else f"random (seed {seed})", r["inference"], _ours("JF_mean", r["jf"]),
        DEGENERATE if r["degenerate"] else None, r["seconds"], r["images_per_s"], r["peak_gb"],
        r["memory_kind"] if r["peak_gb"] is not None else None, r["steps"], r["samples"],
        None if r["phases"] is None else ", ".join(f"{name} {steps:,d}" for name, steps in r["phases"]), r["device"],
    ]  # fmt: skip


def build_budget_table(p: Params, scores: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """The equal-budget table: every method trained on the same data for the same budget
    (``budget`` section) and scored on the same benchmark, each also at random
    initialisation (the same network untrained, seeded by ``seed``), and a method with its
    own inference through it and through the generic label propagation; as ``{"title",
    "header", "formats", "rows", "notes", "points"}`` (``points``: :func:`budget_points`,
    for the figure). A degenerate prediction (no foreground in any scored frame) has no
    J&F and says so in its ``prediction`` cell."""
    from hvc.config.plan import budget_benchmark

    bench = budget_benchmark(p)
    b = p.budget
    amount = f"{b.images:,} training samples" if b.unit == "images" else f"{b.seconds:g} s of training"
    title = f"Equal budget: {amount} per method on {p.data.train_set}, scored on {source_name(bench) if bench else '–'}"
    points = budget_points(p, scores)
    rows = [_budget_row(r, p.seed) for r in points]
    notes = [
        "Each method trains on the same training set, data.train_set (HVC on its images, clip methods on its videos; on the demo both are made from the same training photographs) "
        "with train.batch_size samples per step (or its phase's own batch); a method with several training phases splits "
        "the budget between them by their shares, and 'phases run' gives the steps each phase got.",
        "initialisation 'random': the same network untrained, seeded as the trained one; nothing is trained, so its training columns are empty.",
        "inference 'own': the method's own inference (its registry entry); 'generic': the generic label propagation (propagation.inference: generic) "
        "with the method's propagation preset. Rows of one method and initialisation share one model.",
        "Peak memory: the GPU's peak allocation when trained on a GPU, else the training process's peak resident memory (column memory: GPU or host).",
    ]
    if bench is None:
        notes.append("No J&F: data.benchmarks has no DAVIS-style benchmark (set budget.benchmark).")
    if any(r["degenerate"] for r in points):
        notes.append(f"{DEGENERATE} ({', '.join(r['label'] for r in points if r['degenerate'])}): every scored frame is all background; its J&F is not a result.")
    missing = [r["label"] for r in points if r["jf"] is None and not r["degenerate"]]
    if missing and bench is not None:
        notes.append(f"No J&F ({', '.join(missing)}): no score file.")
    return {"title": title, "header": list(BUDGET_HEADER), "formats": list(BUDGET_FORMATS), "rows": rows, "notes": notes, "points": points}


def _empty_cell_notes(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Replace every value cell that holds a reason (a string) by None and return one note
    per reason, naming the columns it empties when it empties every row of them, else the
    rows it concerns ("Not run (...): reason." for cells not run, else "Empty (...): reason.")."""
    where: dict[str, tuple[dict[str, None], dict[int, None]]] = {}
    for row in rows:
        for c, cell in enumerate(row):
            if c and isinstance(cell, str):
                labels, cols = where.setdefault(cell, ({}, {}))
                labels[row[0]] = None
                cols[c] = None
                row[c] = None
    notes = []
    for reason, (labels, cols) in where.items():
        whole_columns = len(rows) > 1 and all(row[c] is None for row in rows for c in cols)
        named = [header[c].removesuffix(" (ours)") for c in cols] if whole_columns else list(labels)
        kind, text = ("Not run", reason.removeprefix("not run: ")) if reason.startswith("not run: ") else ("Empty", reason)
        notes.append(f"{kind} ({', '.join(named)}): {text}.")
    return notes


def frame(t: dict[str, Any], std: bool = True):
    """The table as a pandas DataFrame: the label column and one numeric column (float,
    NaN where empty) per value column; text columns (the budget table's device) as text.
    With ``std``, a column holding means over seeds (:class:`hvc.report.seeds.MeanStd`) is
    followed by ``<column> std``, their standard deviations."""
    import pandas as pd

    formats = t.get("formats") or [""] * len(t["header"])
    columns = {}
    for c, name in enumerate(t["header"]):
        values = [r[c] for r in t["rows"]]
        if not (c and formats[c]):
            columns[name] = pd.Series(values, dtype="object")
        elif formats[c] == ",.0f" and all(v is None or float(v).is_integer() for v in values):
            columns[name] = pd.Series([None if v is None else int(v) for v in values], dtype="Int64")  # counts: 96, not 96.0
        else:
            columns[name] = pd.Series(values, dtype="float64")
        if std and any(isinstance(v, MeanStd) and v.n > 1 for v in values):
            columns[f"{name} std"] = pd.Series([v.std if isinstance(v, MeanStd) else None for v in values], dtype="float64")
    return pd.DataFrame(columns)


def _shown(t: dict[str, Any]):
    """The table with every cell as text, as it is shown: each column in its format, "–" where empty."""
    import pandas as pd

    formats = t.get("formats") or [""] * len(t["header"])
    df = frame(t, std=False)
    for c, name in enumerate(t["header"]):
        fmt = formats[c]
        raw = [r[c] for r in t["rows"]]
        df[name] = [
            "–" if v is None or v is pd.NA or v != v else (r.text(fmt) if isinstance(r, MeanStd) and fmt else format(v, fmt) if fmt else str(v))
            for v, r in zip(df[name].tolist(), raw)
        ]
    return df.astype("object")


def _caption_lines(t: dict[str, Any]) -> list[str]:
    return [t["settings"]] if t.get("settings") else []


def to_markdown(t: dict[str, Any]) -> str:
    """The table in Markdown (pandas ``to_markdown``): title, settings line, table, notes."""
    df = _shown(t)
    align = ["left"] + ["right"] * (len(df.columns) - 1)
    lines = [f"## {t['title']}", ""] + [f"*{line}*" for line in _caption_lines(t)] + [""] * bool(_caption_lines(t))
    lines.append(df.to_markdown(index=False, disable_numparse=True, colalign=align))
    if t.get("notes"):
        lines += [""] + [f"- {n}" for n in t["notes"]]
    return "\n".join(lines) + "\n"


def to_html(t: dict[str, Any]) -> str:
    """A standalone HTML page of one table (pandas ``to_html``), its settings and notes (for the Snakemake report)."""
    import html

    esc = html.escape
    table = _shown(t).to_html(index=False, escape=True, border=0, justify="center", classes="results")
    notes = "".join(f"<li>{esc(n)}</li>" for n in t.get("notes") or [])
    caption = "".join(f'<p class="settings">{esc(line)}</p>\n' for line in _caption_lines(t))
    style = (
        "body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse}.settings{color:#555}"
        "th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(t['title'])}</title>"
        f"<style>{style}</style></head><body>\n<h3>{esc(t['title'])}</h3>\n{caption}{table}\n"
        + (f"<ul>{notes}</ul>\n" if notes else "")
        + "</body></html>\n"
    )


def to_csv(t: dict[str, Any]) -> str:
    """The table as CSV (pandas ``to_csv``): numbers unformatted (percent for scores), empty where
    a cell has no value (the reason is in the notes of the other formats)."""
    return frame(t).to_csv(index=False, lineterminator="\n")


def to_latex(t: dict[str, Any]) -> str:
    """The table as a LaTeX ``table`` (pandas ``to_latex``, booktabs rules), captioned with its
    title and settings line."""

    def esc(s: str) -> str:
        return s.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("_", r"\_").replace("%", r"\%").replace("#", r"\#")

    caption = esc(" ".join([t["title"] + "."] + _caption_lines(t)))
    spec = "l" + "c" * (len(t["header"]) - 1)
    return _shown(t).to_latex(index=False, escape=True, column_format=spec, caption=caption, position="t")


# runs.csv: the training cost columns (from the model's train.json)
RUN_COST = ("steps", "train_seconds", "images_per_s", "peak_gpu_memory_gb", "peak_host_memory_gb", "device")
HEADLINE = {"davis": "JF_mean", "vost": "J_mean", "miou": "mIoU", "pck": "PCK@0.1", "server": "overall"}


def _flat_params(params: Params) -> dict[str, Any]:
    """Every parameter as a dotted key → scalar (lists as YAML flow text: one cell each)."""
    import yaml

    from hvc.config.plan import flatten

    flat = flatten(params.model_dump(mode="json"))
    return {k: yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, list) else v for k, v in flat.items()}


def _run_row(key: str, exp: Any, bench: str, summary: dict, train: dict) -> dict[str, Any]:
    """One row of runs.csv without the parameter columns; a repetition over seeds is filed
    under the experiment it repeats, its seed in ``seed``."""
    from hvc.config.benchmarks import get_benchmark

    scoring = get_benchmark(bench).scoring
    headline = HEADLINE[scoring] if scoring != "server" or "overall" in summary else "JF_mean"
    parts = {m: float(summary[m]) for m in METRICS if isinstance(summary.get(m), (int, float)) and not isinstance(summary[m], bool)}
    return {
        "experiment": exp.seed_of or key, "trained": exp.trained,
        "method": exp.params.method if exp.trained or exp.random_init else key.removesuffix("+semantic"),
        "benchmark": bench, "headline": headline, "score": None if degenerate(summary) else parts.get(headline),
        "degenerate": degenerate(summary), **parts,
        **{k: train.get(k) for k in RUN_COST},
        "model_id": exp.ids["train"] if exp.trained else None,
        "model_code": (train.get("provenance") or {}).get("code_hash"),
        "evaluation_code": (summary.get("provenance") or {}).get("code_hash"),
        "git_commit": (summary.get("provenance") or train.get("provenance") or {}).get("git_commit"),
        "seed": exp.params.seed,
    }  # fmt: skip


def runs_frame(p: Params, scores: dict[tuple[str, str], dict]):
    """The tidy results: one row per (experiment, benchmark) scored, as a pandas DataFrame.

    Columns: ``experiment``, ``trained``, ``method``, ``benchmark``; ``headline`` (the name
    of the benchmark's headline metric: JF_mean, J_mean for VOST, mIoU, PCK@0.1, overall
    for YouTube-VOS) and ``score`` (its value); every metric of the score file (fractions
    in [0, 1], as the evaluate stage writes them); the training cost of the model
    (``steps``, ``train_seconds``, ``images_per_s``, peak GPU and host memory in GiB,
    ``device``; empty for baselines); ``model_id`` and the code hashes of training and
    scoring (``model_code``, ``evaluation_code``) and ``git_commit``; ``seed`` (the run's
    global seed: a repetition of ``params.seeds`` has the key of the experiment it repeats
    in ``experiment`` and its own seed here); then one column per parameter (dotted key)
    whose value differs between the experiments of the set.
    Numbers are numbers; what a run lacks is empty.
    """
    import pandas as pd

    from hvc.config.plan import plan

    experiments = plan(p)
    records, params = [], []
    for (key, source), summary in sorted(scores.items()):
        exp = experiments.get(key)
        if exp is None or source == "train" or source.startswith("flow_"):
            continue
        records.append(_run_row(key, exp, source, summary, scores.get((key, "train")) or {}))
        params.append(_flat_params(exp.params))
    runs = pd.DataFrame.from_records(records)
    if "steps" in runs:
        steps = pd.to_numeric(runs["steps"])
        if all(float(v).is_integer() for v in steps.dropna()):
            runs["steps"] = steps.astype("Int64")  # 96, not 96.0 beside the baselines' empty cells
    keys = list(dict.fromkeys(k for row in params for k in row))
    differing = [k for k in keys if len({repr(row.get(k)) for row in params}) > 1 and k != "seed"]  # seed: its own column
    for k in differing:
        runs[k] = [row.get(k) for row in params]
    return runs


def seed_scores(p: Params, scores: dict[tuple[str, str], dict]) -> dict[tuple[str, str], dict]:
    """``scores`` with the runs of each experiment over ``params.seeds`` folded into one
    summary under its key, numbers as :class:`hvc.report.seeds.MeanStd` (unchanged with one seed)."""
    from hvc.config.plan import plan, seed_groups

    if len(p.seeds) < 2:
        return scores
    return aggregate_seeds(scores, seed_groups(plan(p)))


# The sweep table: per benchmark scoring, the headline metric and its parts.
SWEEP_METRICS = {
    "davis": ("JF_mean", "J_mean", "F_mean"),
    "vost": ("J_mean", "J_last_mean"),
    "miou": ("mIoU",),
    "pck": ("PCK@0.1", "PCK@0.2"),
    "server": ("overall", "J_seen", "F_seen", "J_unseen", "F_unseen"),
}
SWEEP_COST = (("steps", "iterations", ",.0f"), ("train_seconds", "training time (s)", ".1f"),
              ("images_per_s", "images/s", ".1f"), ("peak_memory_gb", "peak memory (GB)", ".2f"))  # fmt: skip
# (train.json key, column, format); the last, peak memory, is the GPU's or else the host's


def _sweep_value(v: Any) -> Any:
    """A swept value as a table cell: numbers as numbers, anything else as YAML flow text."""
    import yaml

    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _sweep_cost(train: dict) -> list[Any]:
    """The training-cost cells of a sweep row (peak memory: the GPU's, else the process's host memory)."""
    gpu = train.get("peak_gpu_memory_gb")
    memory = gpu if gpu is not None else train.get("peak_host_memory_gb")
    return [train.get(key) for key, *_ in SWEEP_COST[:-1]] + [memory]


def build_sweep_table(p: Params, scores: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """The sweep table (``params.sweep``): one row per setting (:func:`hvc.config.plan.sweep_experiments`),
    its swept values, the headline metric and its parts (:data:`SWEEP_METRICS`) on every
    benchmark of ``data.benchmarks``, and the training cost (:data:`SWEEP_COST`).

    Args:
        p: base params.
        scores: {(experiment key, source): summary} (seed groups already folded).
    Returns:
        ``{"title", "header", "formats", "rows", "notes"}`` as :func:`build_table`.
    """
    from hvc.config.plan import sweep_experiments

    keys = list(p.sweep)
    metrics = [(b, m) for b in p.data.benchmarks for m in SWEEP_METRICS[get_benchmark(b).scoring]]
    numeric = {k: all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.sweep[k]) for k in keys}
    header = ["Setting", *keys, *(f"{source_name(b)} {METRICS[m][0]}" for b, m in metrics), *(label for _, label, _ in SWEEP_COST)]
    formats = ["", *("g" if numeric[k] else "" for k in keys), *(FORMATS["percent"] for _ in metrics), *(f for *_, f in SWEEP_COST)]
    rows, missing, host = [], {}, False
    for point, exp in sweep_experiments(p):
        row = [", ".join(f"{k}={_sweep_value(v)}" for k, v in point.items()), *(_sweep_value(point[k]) for k in keys)]
        for b, m in metrics:
            value = (scores.get((exp.key, b)) or {}).get(m)
            row.append(_ours(m, value) if value is not None else None)
            if value is None:
                missing.setdefault(source_name(b), {})[row[0]] = None
        train = scores.get((exp.key, "train")) or {}
        host |= train.get("peak_gpu_memory_gb") is None and train.get("peak_host_memory_gb") is not None
        rows.append(row + _sweep_cost(train))
    mode = "grid product of the values" if len(keys) > 1 else "one model per value"
    notes = [f"Each row is one experiment ({mode}); every other parameter as in the settings line. Scores in percent."]
    notes += [f"Empty ({b}: {', '.join(labels)}): no score (not scored yet, or the server's score is not saved)." for b, labels in missing.items()]
    if host:
        notes.append("Peak memory: the training process's peak host memory where trained without a GPU.")
    title = f"Sweep over {' × '.join(keys)} ({len(rows)} settings)"
    return {"title": title, "header": header, "formats": formats, "rows": rows, "notes": notes}


def assemble(p: Params, scores: dict[tuple[str, str], dict], out_dir: Path, settings: str | None = None) -> list[str]:
    """Write every table of these params (Markdown, CSV, LaTeX, HTML) to ``out_dir``, atomically.

    Args:
        p: base params.
        scores: {(experiment key, benchmark): the evaluate stage's summary}, one per run (the
            runs of an experiment over ``params.seeds`` are folded here: :func:`seed_scores`).
        out_dir: ``results/tables/<experiment set>``; also gets ``runs.csv`` (the tidy
            results, :func:`runs_frame`), ``summary.json`` (all scores by key, and the
            ``provenance`` of the tables: :func:`hvc.config.code.provenance`) and
            ``tables.json`` (every table as built, for the figures).
        settings: a caption line naming the parameter files, overrides and experiment set,
            printed under every table's title.
    Returns:
        the table names written.
    """
    names = table_names(p)
    built = {}
    folded = seed_scores(p, scores)  # runs over params.seeds as mean ± std
    with atomic_dir(out_dir) as tmp:
        for name in names:
            if name == "budget":
                t = built[name] = build_budget_table(p, scores)
            else:
                t = built[name] = build_sweep_table(p, folded) if name == "sweep" else build_table(name, p, folded)
                t["notes"] += [seeds_note(p.seeds)] if len(p.seeds) > 1 else []
            if settings:
                t["settings"] = settings
            write_text(tmp / f"{name}.md", to_markdown(t))
            write_text(tmp / f"{name}.csv", to_csv(t))
            write_text(tmp / f"{name}.tex", to_latex(t))
            write_text(tmp / f"{name}.html", to_html(t))
        write_text(tmp / "runs.csv", runs_frame(p, scores).to_csv(index=False, lineterminator="\n"))
        summary = {f"{k}/{b}": v for (k, b), v in sorted(scores.items())}
        write_json(tmp / "summary.json", {**summary, "provenance": provenance("tables", p.method)})
        write_json(tmp / "tables.json", built)  # for the figures stage's bar charts
    return names
