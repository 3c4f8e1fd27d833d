"""Figures: propagated masks overlaid on sampled frames (like the paper's Fig. 6).

One PNG per (encoder, benchmark): rows are sequences, columns evenly spaced frames,
each frame blended with its predicted mask in the DAVIS palette colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hvc.benchmarks import read_benchmark
from hvc.io import atomic_path, davis_palette, read_image, read_mask


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a label map (H, W) into a frame (H, W, 3) uint8 with the DAVIS palette; background untouched."""
    palette = np.array(davis_palette(), np.uint8).reshape(256, 3)
    colour = palette[labels]
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg]
    return out.astype(np.uint8)


def overlay_grid(
    benchmark: str, root: Path, predictions: Path, out_png: Path, max_sequences: int = 4, columns: int = 5, width: int = 240
) -> None:
    """Write a grid of overlays (sequences x sampled frames) of one prediction folder to ``out_png``.

    Args:
        benchmark, root: the benchmark and its folder (to find the frames).
        predictions: folder with ``<sequence>/<frame>.png`` predicted masks.
        max_sequences, columns: grid size; frames are evenly spaced over each video.
        width: width of each tile in pixels (aspect kept).
    """
    videos = read_benchmark(benchmark, root)[:max_sequences]
    rows, tile_h = [], None
    for video in videos:
        idx = np.linspace(0, len(video.frames) - 1, columns).round().astype(int)
        tiles = []
        for i in idx:
            frame = read_image(video.frames[i])
            labels = read_mask(Path(predictions) / video.name / f"{video.frames[i].stem}.png")
            tile = Image.fromarray(overlay(frame, labels))
            tile_h = tile_h or round(tile.height * width / tile.width)  # every tile as the first
            tiles.append(np.asarray(tile.resize((width, tile_h), Image.BILINEAR)))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    with atomic_path(out_png) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
