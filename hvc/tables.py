"""The paper's tables, with our numbers beside the published ones.

Every cell is ours (from a score file) or says why it is empty ("not run: ..."); the
published value, where the paper has one (HVC-SPEC §6), stands in its own column
labelled "paper". Output per table: Markdown, CSV and LaTeX under ``results/tables/``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hvc.experiments import published_tables, row_experiment, table_names
from hvc.io import atomic_dir, write_json, write_text
from hvc.params import Params

METRIC_NAMES = {
    "JF_mean": "J&F",
    "J_mean": "J mean",
    "J_recall": "J recall",
    "J_decay": "J decay",
    "F_mean": "F mean",
    "F_recall": "F recall",
    "F_decay": "F decay",
}
BENCHMARK_NAMES = {"demo": "Demo", "davis2017": "DAVIS17", "davis2016": "DAVIS16"}


def _columns(table: dict[str, Any], scored: list[str]) -> list[tuple[str, str, bool]]:
    """(benchmark, metric, has_published) for each value column."""
    cols = [(b, m, True) for b in table["benchmarks"] for m in table["metrics"]]
    if table["benchmarks"] != ["demo"]:  # ablation/benchmark tables also show scored extras
        cols += [(b, m, False) for b in scored if b not in table["benchmarks"] for m in table["metrics"]]
    return cols


def build_table(name: str, p: Params, scores: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """One table as ``{"title", "header", "rows"}`` of strings.

    Args:
        name: a key of ``published.yaml``.
        p: the base params (to resolve each row's experiment).
        scores: {(experiment key, benchmark): score summary (fractions)}.
    """
    table = published_tables()[name]
    cols = _columns(table, p.data.benchmarks)
    header = ["Setting"]
    for b, m, has_pub in cols:
        label = f"{BENCHMARK_NAMES.get(b, b)} {METRIC_NAMES[m]}"
        header.append(f"{label} (ours)")
        if has_pub and b != "demo":
            header.append(f"{label} (paper)")
    rows = []
    for row in table["rows"]:
        exp = row_experiment(p, row)
        published = row.get("published") or []
        cells = [row["label"]]
        for i, (b, m, has_pub) in enumerate(cols):
            if exp is None:
                cells.append("not run: needs propagation.semantic_checkpoint")
            elif b not in p.data.benchmarks:
                cells.append(f"not run: {b} not in data.benchmarks")
            elif row.get("encoder") in ("random", "imagenet") and row["encoder"] not in p.baselines:
                cells.append(f"not run: {row['encoder']} not in baselines")
            elif (exp.key, b) not in scores and row.get("overrides") and name not in p.ablations:
                cells.append("not run: a training variant; list its ablation table (e.g. table7e) in ablations")
            elif (exp.key, b) not in scores:
                cells.append("missing score")
            else:
                cells.append(f"{100 * scores[(exp.key, b)][m]:.1f}")
            if has_pub and b != "demo":
                value = published[i] if i < len(published) else None
                cells.append("–" if value is None else f"{value:.1f}")
        rows.append(cells)
    return {"title": table["title"], "header": header, "rows": rows}


def to_markdown(t: dict[str, Any]) -> str:
    lines = [f"## {t['title']}", "", "| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
    lines += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    return "\n".join(lines) + "\n"


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
    """Write every table of these params (Markdown, CSV, LaTeX) to ``out_dir``, atomically.

    Args:
        p: base params.
        scores: {(experiment key, benchmark): the evaluate stage's summary}.
        out_dir: ``results/tables``; also gets ``summary.json`` (all scores by key).
    Returns:
        the table names written.
    """
    names = table_names(p)
    with atomic_dir(out_dir) as tmp:
        for name in names:
            t = build_table(name, p, scores)
            write_text(tmp / f"{name}.md", to_markdown(t))
            write_text(tmp / f"{name}.csv", to_csv(t))
            write_text(tmp / f"{name}.tex", to_latex(t))
        write_json(tmp / "summary.json", {f"{k}/{b}": v for (k, b), v in sorted(scores.items())})
    return names
