"""Figures: mask overlays (the paper's Fig. 6) and bar charts of the tables.

- :func:`overlay_grid`: one PNG per (encoder, benchmark): rows are sequences, columns
  evenly spaced frames, each frame blended with its predicted mask in the DAVIS palette;
- :func:`budget_plot`: J&F against training time of the equal-budget table (``budget.png``).
- :func:`bar_chart`: one PNG per ablation table (and the demo table): our value beside
  the published one for each row, per benchmark column;
- :func:`loss_curves`: the training loss of every trained model against the optimizer
  step, from each model's dvclive metrics (``loss_curves.png``);
- each method's own figures (HVC: pseudo-dynamic signals in flow colours, Fig. 12,
  :mod:`hvc.report.pseudo_dynamic`) through its registry entry (:func:`method_figures`).
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hvc.eval.readers import read_benchmark
from hvc.io import atomic_path, davis_palette, read_image, read_mask


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a label map (H, W) into a frame (H, W, 3) uint8 with the DAVIS palette; background untouched."""
    palette = np.array(davis_palette(), np.uint8).reshape(256, 3)
    colour = palette[labels]
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg]
    return out.astype(np.uint8)


def _label(image: Image.Image, xy: tuple[int, int], text: str) -> None:
    """Write ``text`` at ``xy`` in white on a dark box (PIL's built-in font)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox(xy, text)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 255))


def overlay_grid(
    benchmark: str,
    root: Path,
    predictions: Path,
    out_png: Path,
    max_sequences: int = 4,
    columns: int = 5,
    width: int = 240,
    encoder: str = "",
) -> None:
    """Write a grid of overlays (sequences x sampled frames) of one prediction folder to ``out_png``.

    The figure is labelled: a title line with the encoder and the benchmark, the sequence
    name on the first tile of each row and the frame number (0 = the annotated first
    frame) on every tile.

    Args:
        benchmark, root: the benchmark and its folder (to find the frames).
        predictions: folder with ``<sequence>/<frame>.png`` predicted masks.
        max_sequences, columns: grid size; frames are evenly spaced over each video.
        width: width of each tile in pixels (aspect kept).
        encoder: the encoder's name for the title (e.g. ``"hvc"``, ``"random"``).
    Raises:
        DataError: a frame or a predicted mask is missing or unreadable (naming it).
    """
    videos = read_benchmark(benchmark, root)[:max_sequences]
    rows, tile_h = [], None
    for video in videos:
        idx = np.linspace(0, len(video.frames) - 1, columns).round().astype(int)
        tiles = []
        for n, i in enumerate(idx):
            frame = read_image(video.frames[i])
            labels = read_mask(Path(predictions) / video.name / f"{video.frames[i].stem}.png")
            tile = Image.fromarray(overlay(frame, labels))
            tile_h = tile_h or round(tile.height * width / tile.width)  # every tile as the first
            tile = tile.resize((width, tile_h), Image.BILINEAR)
            _label(tile, (4, tile_h - 14), f"frame {i}" + (" (annotated)" if i == 0 else ""))
            if n == 0:
                _label(tile, (4, 4), video.name)
            tiles.append(np.asarray(tile))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    title = Image.new("RGB", (grid.shape[1], 22), (255, 255, 255))
    _label(title, (6, 5), f"encoder: {encoder or 'unnamed'}  |  benchmark: {benchmark}  |  rows: sequences, columns: frames")
    grid = np.concatenate([np.asarray(title), grid], axis=0)
    with atomic_path(out_png) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _number(cell: Any) -> float | None:
    """A table cell as a number: numbers as they are (tables.json), formatted text parsed, None when empty."""
    if cell is None or isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float)):
        return None if cell != cell else float(cell)
    try:
        return float(str(cell).replace(",", ""))
    except ValueError:
        return None


def bar_chart(table: dict, out_png: Path) -> bool:
    """Grouped bars of one assembled table (:func:`hvc.report.tables.build_table`): for each
    "(ours)" J&F column (every "(ours)" column when the table has no J&F) a panel with a
    bar per row, and the "(paper)" value beside it when there is one. Cells that are not
    numbers (not run, missing) are left out.

    Returns:
        False (nothing written) when the table has no numeric value of ours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header, rows = table["header"], table["rows"]
    ours_columns = [c for c, name in enumerate(header) if name.endswith(" (ours)")]
    headline = [c for c in ours_columns if " J&F " in header[c]]  # one panel per benchmark where J&F exists
    panels = []
    for c in headline or ours_columns:
        name = header[c]
        paper = header.index(name.replace(" (ours)", " (paper)")) if name.replace(" (ours)", " (paper)") in header else None
        ours = [_number(r[c]) for r in rows]
        if any(v is not None for v in ours):
            panels.append((name.removesuffix(" (ours)"), ours, [_number(r[paper]) for r in rows] if paper else None))
    if not panels:
        return False
    keep = [i for i in range(len(rows)) if any(ours[i] is not None for _, ours, _ in panels)]  # rows with a value of ours
    panels = [(t, [o[i] for i in keep], [q[i] for i in keep] if q else None) for t, o, q in panels]
    labels = [rows[i][0] for i in keep]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 2.2 * len(panels), 3.6), squeeze=False)
    x = np.arange(len(labels))
    for ax, (title, ours, paper) in zip(axes[0], panels):
        width = 0.4 if paper else 0.7
        ax.bar(x - (width / 2 if paper else 0), [v if v is not None else 0 for v in ours], width, label="ours")
        if paper:
            ax.bar(x + width / 2, [v if v is not None else 0 for v in paper], width, label="paper", alpha=0.6)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(table["title"], fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def budget_plot(table: dict, out_png: Path) -> bool:
    """J&F against training time of the equal-budget table (:func:`hvc.report.tables.build_budget_table`):
    one labelled point per method from the table's ``points``.

    Returns:
        False (nothing written) when no method has both a J&F and a training time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [q for q in table.get("points", []) if q.get("jf") is not None and q.get("seconds") is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for q in points:
        ax.scatter(q["seconds"], 100 * q["jf"], s=40)
        ax.annotate(q.get("label", q.get("display", q["method"])), (q["seconds"], 100 * q["jf"]), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("J&F (%)")
    ax.set_title(textwrap.fill(table["title"], 60), fontsize=9)  # wrapped: a long title is not cut at the edges
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def method_figures(p, model_dir: Path, benchmarks: list[tuple[str, Path]], out: Path) -> list[Path]:
    """The method-only figures of a trained model (its method's registry entry,
    :attr:`hvc.config.registry.MethodSpec.figures`), drawn into ``out``; none for a method
    that declares none.

    Args:
        p: the parameters; model_dir: the model folder (its ``encoder.json`` names the method);
        benchmarks: (name, folder) of the benchmarks to draw from.
    Returns:
        the files written.
    Raises:
        DataError: the model folder has no readable ``encoder.json``.
    """
    from hvc.config.registry import load_function, method_spec
    from hvc.io import DataError, read_json

    try:
        method = read_json(Path(model_dir) / "encoder.json")["method"]
    except (KeyError, TypeError):
        raise DataError(Path(model_dir) / "encoder.json", "names no method: not a model folder written by `hvc train`") from None
    written: list[Path] = []
    for target in method_spec(method).figures.values():
        written += load_function(target)(p, Path(model_dir), benchmarks, out)
    return written


def curve_label(key: str, method: str) -> str:
    """A model's name in the loss-curve legend: its method and the setting that differs
    (``HVC: base``, ``HVC: hvc.alpha=0.5``, ``LIIR: equal budget``), the method by its
    display name (:mod:`hvc.config.registry`)."""
    from hvc.config.registry import method_spec

    name = method_spec(method).display
    if key == method:
        return f"{name}: base"
    if key.startswith("budget-"):
        return f"{name}: equal budget"
    parts = [part for part in key.split(",") if not part.startswith("method=")]
    return f"{name}: {', '.join(parts) or 'base'}"


def read_curve(model_dir: Path, metric: str = "loss") -> tuple[list[int], list[float]]:
    """(optimizer steps, values) of one dvclive metric of a trained model
    (``<model>/dvclive/plots/metrics/train/<metric>.tsv``; empty when absent)."""
    path = Path(model_dir) / "dvclive" / "plots" / "metrics" / "train" / f"{metric}.tsv"
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    steps = [int(r["step"]) for r in rows]
    return steps, [float(r[metric]) for r in rows]


def loss_curves(curves: list[tuple[str, Path]], out_png: Path) -> bool:
    """The training loss of every trained model against the optimizer step (one line per
    model, labelled with ``curves``' labels), from each model's dvclive metrics.

    Args:
        curves: (legend label, trained model folder) per model.
    Returns:
        False (nothing written) when no model has a logged loss.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [(label, *read_curve(model)) for label, model in curves]
    drawn = [(label, steps, values) for label, steps, values in drawn if steps]
    if not drawn:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, steps, values in drawn:
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss of every trained model (dvclive, logged every train.log_every steps)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
