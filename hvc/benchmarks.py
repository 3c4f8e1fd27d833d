"""Benchmark readers: each returns videos in one common form, :class:`Video`.

Benchmarks stay in their official folder layouts. DAVIS 2016 (greyscale 0/255 masks,
``ImageSets/480p/val.txt`` listing frame/mask path pairs) and DAVIS 2017 (palette
masks, ``ImageSets/2017/val.txt`` listing sequence names) are read here; the built-in
demo uses the DAVIS 2017 layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hvc.io import DataError, read_image, read_mask


@dataclass
class Video:
    """One benchmark video.

    Attributes:
        name: sequence name.
        frames: frame files in temporal order.
        masks: {frame index: annotation file}; frame 0 always, every frame when the
            benchmark's ground truth is public.
    """

    name: str
    frames: list[Path]
    masks: dict[int, Path] = field(default_factory=dict)

    def read_frames(self) -> list[np.ndarray]:
        """All frames as (H, W, 3) uint8 arrays; raises DataError naming a bad file."""
        return [read_image(p) for p in self.frames]

    def first_labels(self) -> np.ndarray:
        """(H, W) uint8 label map of frame 0.

        Raises:
            DataError: the first-frame mask is missing or empty, or its size differs from the frame's.
        """
        if 0 not in self.masks:
            raise DataError(self.frames[0], f"sequence {self.name!r} has no first-frame annotation")
        labels = read_mask(self.masks[0])
        if labels.max() == 0:
            raise DataError(self.masks[0], "first-frame mask is empty: no object to propagate")
        return labels


# name → (folder below data.root, image-set file, layout)
BENCHMARK_LAYOUTS = {
    "demo": ("", "ImageSets/2017/val.txt", "davis2017"),
    "davis2017": ("davis2017/DAVIS", "ImageSets/2017/val.txt", "davis2017"),
    "davis2016": ("davis2016/DAVIS", "ImageSets/480p/val.txt", "davis2016"),
}


def read_davis(root: Path, image_set: str, layout: str, resolution: str = "480p") -> list[Video]:
    """Read a DAVIS-layout benchmark.

    Args:
        root: the folder holding ``JPEGImages/``, ``Annotations/`` and ``ImageSets/``.
        image_set: path of the split file below ``root``.
        layout: ``"davis2017"`` (split file lists sequence names) or ``"davis2016"``
            (split file lists ``/JPEGImages/480p/<seq>/<n>.jpg /Annotations/...`` pairs).
        resolution: the resolution folder (``480p``).
    Returns:
        the videos in split-file order.
    Raises:
        DataError: the split file is missing, names a missing sequence, a sequence has
            fewer than 2 frames, or its frame and mask file names disagree.
    """
    root = Path(root)
    split = root / image_set
    try:
        lines = [ln.strip() for ln in split.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise DataError(split, "image-set file not found") from None
    if layout == "davis2016":
        names = list(dict.fromkeys(Path(ln.split()[0]).parent.name for ln in lines))
    elif layout == "davis2017":
        names = lines
    else:
        raise ValueError(f"unknown layout {layout!r}")
    videos = []
    for name in names:
        frame_dir = root / "JPEGImages" / resolution / name
        mask_dir = root / "Annotations" / resolution / name
        if not frame_dir.is_dir():
            raise DataError(split, f"names sequence {name!r} but {frame_dir} does not exist")
        frames = sorted(frame_dir.glob("*.jpg"))
        if len(frames) < 2:
            raise DataError(frame_dir, f"sequence has {len(frames)} frame(s); propagation needs at least 2")
        stems = {p.stem: i for i, p in enumerate(frames)}
        masks = {}
        for m in sorted(mask_dir.glob("*.png")):
            if m.stem not in stems:
                raise DataError(m, f"mask has no frame {m.stem}.jpg in {frame_dir}")
            masks[stems[m.stem]] = m
        videos.append(Video(name, frames, masks))
    return videos


def benchmark_root(name: str, data_root: Path, demo_dir: Path | None = None) -> Path:
    """The folder of benchmark ``name``: below ``data_root``, or the demo's benchmark folder."""
    if name == "demo":
        if demo_dir is None:
            raise ValueError("the demo benchmark needs the demo-data folder")
        return Path(demo_dir) / "benchmark"
    if name not in BENCHMARK_LAYOUTS:
        raise NotImplementedError(f"benchmark {name!r} has no reader yet; readers exist for {sorted(BENCHMARK_LAYOUTS)}")
    return Path(data_root) / BENCHMARK_LAYOUTS[name][0]


def read_benchmark(name: str, root: Path) -> list[Video]:
    """Videos of benchmark ``name`` found in ``root`` (see :func:`benchmark_root`)."""
    _, image_set, layout = BENCHMARK_LAYOUTS[name]
    return read_davis(root, image_set, layout)
