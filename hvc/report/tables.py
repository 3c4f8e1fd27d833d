"""The paper's tables, with our numbers beside the published ones.

Every cell is ours (from a score file) or says why it is empty (a cell that was not run
is "–" with the reason once in the notes); the published value, where the paper has one
(hvc/config/published.yaml), stands in its own column labelled "paper". Output per table: Markdown, CSV, LaTeX and HTML under ``results/tables/``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hvc.config.plan import columns, missing_checkpoint, published_tables, row_experiment, run_rows, source_available, table_names
from hvc.io import atomic_dir, write_json, write_text
from hvc.config.params import Params
from hvc.config.benchmarks import get_benchmark
from hvc.config.code import provenance
from hvc.config.registry import DEFAULT_METHOD, method_spec

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


def _format(metric: str, value: float | None) -> str:
    kind = METRICS[metric][1]
    if value is None:
        return "–"
    if kind == "percent":
        return f"{100 * value:.1f}"
    if kind == "count":
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _published(metric: str, value: float | None) -> str:
    """A published value as the paper prints it: percent with one decimal, counts, hours, GB, EPE."""
    if value is None:
        return "–"
    kind = METRICS[metric][1]
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "number":
        return f"{value:g}"
    return f"{value:.1f}"


def build_table(name: str, p: Params, scores: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """One table as ``{"title", "header", "rows", "notes"}`` of strings.

    Args:
        name: a key of ``published.yaml``.
        p: the base params (to resolve each row's experiment).
        scores: {(experiment key, source): summary}: a benchmark's scores (fractions),
            ``"train"``: the model's train.json, ``"flow_<benchmark>"``: Table 11 errors.
    Returns:
        every cell is ours, a published value, or says why it is empty; ``notes`` hold
        the longer instructions (e.g. where a server's score file goes). A cell that was
        not run is "–", and the reason is said once in ``notes``, naming the rows it
        concerns (or the columns, when it concerns every row).
    """
    table = published_tables()[name]
    cols = columns(table, p)
    header = ["Setting"]
    for src, m, has_pub in cols:
        label = f"{source_name(src)} {METRICS[m][0]}"
        header.append(f"{label} (ours)")
        if has_pub and src != "demo":
            header.append(f"{label} (paper)")
    trained = {exp.key for _, _, exp in run_rows(p)}
    rows, notes = [], []
    display = method_spec(p.method).display
    for row in table["rows"]:
        if row.get("overrides", {}).get("method") == p.method:
            continue  # the trained method's own rows: its base rows show it
        exp = row_experiment(p, row)
        ours = "{method}" in row["label"]  # a row of the trained method; its published values are the paper's (HVC's)
        published = row.get("published") or [] if not ours or p.method == DEFAULT_METHOD else []
        cells = [row["label"].format(method=display) if ours else row["label"]]
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
                cells.append("missing score")
            elif m in summary and summary[m] is not None:
                cells.append(_format(m, summary[m]))
            elif "status" in summary:
                cells.append("needs server score (see notes)")
                if summary["status"] not in notes:
                    notes.append(summary["status"])
            elif m == "peak_gpu_memory_gb" and summary.get("peak_host_memory_gb") is not None:
                cells.append(f"{summary['peak_host_memory_gb']:.2f} host (no GPU: {summary.get('device', 'CPU')})")
            elif m == "peak_gpu_memory_gb":
                cells.append(f"not measured: trained on {summary.get('device', 'CPU')}")
            else:
                cells.append(f"not in the score file: {m}")
            if has_pub and src != "demo":
                cells.append(_published(m, published[i] if i < len(published) else None))
        rows.append(cells)
    return {"title": table["title"], "header": header, "rows": rows, "notes": _not_run_notes(header, rows) + notes}


BUDGET_HEADER = ["Method", "J&F", "training time (s)", "images/s", "peak memory (GB)", "steps", "samples seen", "phases run (steps)", "device"]


def budget_points(p: Params, scores: dict[tuple[str, str], dict]) -> list[dict[str, Any]]:
    """One record per method of the equal-budget comparison (:func:`hvc.config.plan.budget_experiments`):
    ``method``, ``jf`` (fraction, None when not scored), ``seconds`` (training wall time),
    ``images_per_s``, ``peak_gb`` (GPU peak when trained on a GPU, else the training
    process's peak resident memory) and ``memory_kind`` ("GPU"/"host"), ``steps``,
    ``samples``, ``phases`` (each phase's name and steps run, from ``train.json``),
    ``device``, ``display`` (the method's display name); None for what a file lacks."""
    from hvc.config.plan import BUDGET_PREFIX, budget_benchmark, budget_experiments

    bench = budget_benchmark(p)
    out = []
    for key, exp in budget_experiments(p).items():
        train = scores.get((key, "train")) or {}
        score = scores.get((key, bench)) if bench else None
        gpu = train.get("peak_gpu_memory_gb")
        out.append(
            {
                "method": key.removeprefix(BUDGET_PREFIX),
                "display": method_spec(key.removeprefix(BUDGET_PREFIX)).display,
                "jf": (score or {}).get("JF_mean"),
                "seconds": train.get("train_seconds"),
                "images_per_s": train.get("images_per_s"),
                "peak_gb": gpu if gpu is not None else train.get("peak_host_memory_gb"),
                "memory_kind": "GPU" if gpu is not None else "host",
                "steps": train.get("steps"),
                "samples": None if train.get("steps") is None else train["steps"] * train.get("global_batch", exp.params.train.batch_size),
                "phases": [(ph["name"], ph["steps"]) for ph in train.get("phases", [])] or None,
                "device": train.get("device"),
            }
        )
    return out


def build_budget_table(p: Params, scores: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """The equal-budget table: every method trained on the same data for the same budget
    (``budget`` section) and scored on the same benchmark, as ``{"title", "header",
    "rows", "notes", "points"}`` (``points``: :func:`budget_points`, for the figure)."""
    from hvc.config.plan import budget_benchmark

    bench = budget_benchmark(p)
    b = p.budget
    amount = f"{b.images:,} training samples" if b.unit == "images" else f"{b.seconds:g} s of training"
    title = f"Equal budget: {amount} per method on {p.data.train_set}, scored on {source_name(bench) if bench else '–'}"
    points = budget_points(p, scores)

    def num(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    rows = [
        [
            r["display"],
            "–" if r["jf"] is None else f"{100 * r['jf']:.1f}",
            num(r["seconds"], ".1f"),
            num(r["images_per_s"], ".1f"),
            "–" if r["peak_gb"] is None else f"{r['peak_gb']:.2f} ({r['memory_kind']})",
            num(r["steps"], ",d"),
            num(r["samples"], ",d"),
            "–" if r["phases"] is None else ", ".join(f"{name} {steps:,d}" for name, steps in r["phases"]),
            r["device"] or "–",
        ]
        for r in points
    ]
    notes = [
        "Each method trains on the same training set, data.train_set (HVC on its images, clip methods on its videos; on the demo both are made from the same training photographs) "
        "with train.batch_size samples per step (or its phase's own batch); a method with several training phases splits "
        "the budget between them by their shares, and 'phases run' gives the steps each phase got.",
        "Peak memory: the GPU's peak allocation when trained on a GPU, else the training process's peak resident memory.",
    ]
    if bench is None:
        notes.append("No J&F: data.benchmarks has no DAVIS-style benchmark (set budget.benchmark).")
    return {"title": title, "header": list(BUDGET_HEADER), "rows": rows, "notes": notes, "points": points}


def _not_run_notes(header: list[str], rows: list[list[str]]) -> list[str]:
    """Replace every "not run: <reason>" cell by "–" and return one note per reason, naming
    the columns it empties when no row of them was run, else the rows it concerns."""
    where: dict[str, tuple[dict[str, None], dict[int, None]]] = {}
    for row in rows:
        for c, cell in enumerate(row):
            if c and cell.startswith("not run: "):
                labels, cols = where.setdefault(cell.removeprefix("not run: "), ({}, {}))
                labels[row[0]] = None
                cols[c] = None
                row[c] = "–"
    notes = []
    for reason, (labels, cols) in where.items():
        whole_columns = len(rows) > 1 and all(row[c] == "–" for row in rows for c in cols)
        named = [header[c].removesuffix(" (ours)") for c in cols] if whole_columns else list(labels)
        notes.append(f"Not run ({', '.join(named)}): {reason}.")
    return notes


def to_markdown(t: dict[str, Any]) -> str:
    lines = [f"## {t['title']}", "", "| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
    lines += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    if t.get("notes"):
        lines += [""] + [f"- {n}" for n in t["notes"]]
    return "\n".join(lines) + "\n"


def to_html(t: dict[str, Any]) -> str:
    """A standalone HTML page of one table and its notes (for the Snakemake report)."""
    import html

    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in t["header"])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in t["rows"])
    notes = "".join(f"<li>{esc(n)}</li>" for n in t.get("notes") or [])
    style = (
        "body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse}"
        "th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(t['title'])}</title>"
        f"<style>{style}</style></head><body>\n<h3>{esc(t['title'])}</h3>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
        + (f"<ul>{notes}</ul>\n" if notes else "")
        + "</body></html>\n"
    )


def to_csv(t: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t["header"])
    w.writerows(t["rows"])
    return buf.getvalue()


def to_latex(t: dict[str, Any]) -> str:
    def esc(s: str) -> str:
        return s.replace("&", r"\&").replace("_", r"\_").replace("%", r"\%")

    spec = "l" + "c" * (len(t["header"]) - 1)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{esc(t['title'])}}}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(esc(h) for h in t["header"]) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in t["rows"]]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def assemble(p: Params, scores: dict[tuple[str, str], dict], out_dir: Path) -> list[str]:
    """Write every table of these params (Markdown, CSV, LaTeX, HTML) to ``out_dir``, atomically.

    Args:
        p: base params.
        scores: {(experiment key, benchmark): the evaluate stage's summary}.
        out_dir: ``results/tables``; also gets ``summary.json`` (all scores by key, and the
            ``provenance`` of the tables: :func:`hvc.config.code.provenance`) and
            ``tables.json`` (every table as built, for the figures).
    Returns:
        the table names written.
    """
    names = table_names(p)
    built = {}
    with atomic_dir(out_dir) as tmp:
        for name in names:
            t = built[name] = build_budget_table(p, scores) if name == "budget" else build_table(name, p, scores)
            write_text(tmp / f"{name}.md", to_markdown(t))
            write_text(tmp / f"{name}.csv", to_csv(t))
            write_text(tmp / f"{name}.tex", to_latex(t))
            write_text(tmp / f"{name}.html", to_html(t))
        summary = {f"{k}/{b}": v for (k, b), v in sorted(scores.items())}
        write_json(tmp / "summary.json", {**summary, "provenance": provenance("tables", p.method)})
        write_json(tmp / "tables.json", built)  # for the figures stage's bar charts
    return names
