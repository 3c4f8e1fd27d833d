"""The paper's Fig. 12: HVC's pseudo-dynamic signals of consecutive frames in the standard
flow colours (paper §4.3.4). The signals and their comparison with optical flow (Table 11)
are computed in :mod:`hvc.eval.flow`; this module only draws them.

It is HVC's method-only figure (its registry entry names :func:`draw_pseudo_dynamic`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import flow_to_image

from hvc.eval.flow import Frame, _frame, load_hvc, pseudo_dynamic
from hvc.io import atomic_path

FIGURE_GAP = 4  # pixels between tiles (and around the grid) in flow_figure
FIGURE_HEADER = 18  # height of flow_figure's column-title row, pixels


def draw_pseudo_dynamic(p, model_dir: Path, benchmarks: list[tuple[str, Path]], out: Path, pairs: int = 4) -> list[Path]:
    """Fig. 12: forward/backward pseudo-dynamic signals of the first frame pair of each of
    the first ``pairs`` videos of every mask benchmark, one grid per benchmark
    (``out/pseudo_dynamic_<benchmark>.png``; no optical flow: that needs RAFT weights, see
    ``hvc flow``).

    Args:
        p: the parameters (device, propagation.resolution).
        model_dir: the trained model's folder (its ``checkpoint.pt``).
        benchmarks: (name, folder) of the benchmarks to draw (pose benchmarks are skipped).
        out: the folder the PNGs go to.
    Returns:
        the PNGs written.
    Raises:
        DataError: the checkpoint is not HVC's, or a frame is unreadable.
    """
    from hvc.config.benchmarks import get_benchmark
    from hvc.device import pick_device
    from hvc.eval.readers import read_benchmark

    device = pick_device(p.device)
    model = load_hvc(model_dir, device=device)
    written = []
    for name, root in benchmarks:
        if get_benchmark(name).task == "pose":
            continue
        videos = read_benchmark(name, root)[:pairs]
        a = [v.frames[0] for v in videos]
        b = [v.frames[1] for v in videos]
        signals = [pseudo_dynamic(model, x, y, p.propagation.resolution, device) for x, y in zip(a, b)]
        flow_figure(a, b, signals, None, out / f"pseudo_dynamic_{name}.png")
        written.append(out / f"pseudo_dynamic_{name}.png")
    return written


def flow_colours(field: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """A (2, h, w) signal or flow as an (h, w, 3) uint8 image in the standard flow colours.

    ``torchvision.utils.flow_to_image`` (the Middlebury colour wheel, paper's ref. [102]):
    hue = direction, saturation = length relative to the field's longest vector. ``size``
    = (H, W) enlarges the image by nearest-neighbour (feature cells stay visible).
    """
    img = flow_to_image(torch.as_tensor(field).float()).permute(1, 2, 0).numpy()
    if size is not None and img.shape[:2] != tuple(size):
        img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.NEAREST))
    return img


def flow_figure(
    frames_a: Sequence[Frame],
    frames_b: Sequence[Frame],
    signals: Sequence[tuple[Any, Any]],
    flows: Sequence[Any] | None,
    out_png: str | os.PathLike[str],
    tile_height: int = 120,
    titles: bool = True,
) -> None:
    """Write a grid like the paper's Fig. 12: one row per pair.

    Columns: frame a | frame b | forward signal | backward signal (| RAFT flow a → b when
    ``flows`` is given), colours by :func:`flow_colours`. Every tile is ``tile_height``
    pixels high and as wide as the first frame's aspect gives; tiles are ``FIGURE_GAP``
    pixels apart on white, under a ``FIGURE_HEADER``-pixel row of column titles when
    ``titles``. Written atomically (:func:`hvc.io.atomic_path`).

    Args:
        frames_a, frames_b: the pairs' frames, (H, W, 3) uint8 arrays or image files.
        signals: per pair, (forward (2, h, w), backward (2, h, w)) from :func:`pseudo_dynamic`.
        flows: per pair, a (2, H, W) flow (:func:`raft_flow`), or None for no flow column.
        out_png: the PNG to write.
    Raises:
        ValueError: the sequences differ in length or are empty.
        DataError: a frame file is missing or unreadable.
    """
    n = len(frames_a)
    if n == 0 or len(frames_b) != n or len(signals) != n or (flows is not None and len(flows) != n):
        raise ValueError("flow_figure needs as many frames_a, frames_b, signals (and flows) as pairs, at least one")
    names = ["frame t", "frame t+1", "forward", "backward"] + (["RAFT t->t+1"] if flows is not None else [])
    resample = [Image.BILINEAR, Image.BILINEAR, Image.NEAREST, Image.NEAREST, Image.BILINEAR]
    rows = []
    tile = None
    for i in range(n):
        a, b = _frame(frames_a[i]), _frame(frames_b[i])
        if tile is None:
            tile = (tile_height, max(1, round(tile_height * a.shape[1] / a.shape[0])))
        cells = [a, b, flow_colours(signals[i][0]), flow_colours(signals[i][1])]
        if flows is not None:
            cells.append(flow_colours(flows[i]))
        rows.append([np.asarray(Image.fromarray(c).resize((tile[1], tile[0]), r)) for c, r in zip(cells, resample)])
    th, tw = tile
    cols, gap, head = len(names), FIGURE_GAP, FIGURE_HEADER if titles else 0
    canvas = np.full((head + n * th + (n + 1) * gap, cols * tw + (cols + 1) * gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = head + gap + r * (th + gap)
        for c, cell in enumerate(row):
            x = gap + c * (tw + gap)
            canvas[y : y + th, x : x + tw] = cell
    image = Image.fromarray(canvas)
    if titles:
        draw, font = ImageDraw.Draw(image), ImageFont.load_default()
        for c, name in enumerate(names):
            draw.text((gap + c * (tw + gap) + 2, 3), name, fill=(0, 0, 0), font=font)
    with atomic_path(out_png) as tmp:
        image.save(tmp, format="PNG")
