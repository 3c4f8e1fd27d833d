"""Benchmark readers: each returns videos in one common form, :class:`Video`.

Benchmarks stay in their official folder layouts. DAVIS 2016 (greyscale 0/255 masks,
``ImageSets/480p/val.txt`` listing frame/mask path pairs), DAVIS 2017 (palette
masks, ``ImageSets/2017/val.txt`` listing sequence names) and YouTube-VOS (``meta.json``,
masks only where an object first appears) are read here; the built-in demo uses the
DAVIS 2017 layout.

Readers check the layout (every listed sequence, frame and annotation exists) and
:meth:`Video.check` decodes every file a video needs, so a bad input stops a stage with
a :class:`~hvc.io.DataError` naming the file before any long computation starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hvc.io import DataError, read_image, read_json, read_mask
from hvc.params import ParamsError


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
            DataError: the first-frame mask is missing, unreadable or empty.
        """
        if 0 not in self.masks:
            raise DataError(self.frames[0], f"sequence {self.name!r} has no first-frame annotation")
        labels = read_mask(self.masks[0])
        if labels.max() == 0:
            raise DataError(self.masks[0], "first-frame mask is empty: no object to propagate")
        return labels

    def check(self) -> None:
        """Decode every frame and the first-frame mask once, without keeping them.

        The propagate stage calls this for every video before it starts, so that a
        corrupt file in the last video costs seconds, not the hours spent on the videos
        before it.

        Raises:
            DataError: naming the file: a missing, unreadable or truncated frame or
                first-frame mask, an empty first-frame mask, or a frame whose size differs
                from the first-frame mask's.
        """
        first = self.first_labels()
        for path in self.frames:
            h, w = read_image(path).shape[:2]
            if (h, w) != first.shape:
                raise DataError(
                    path, f"frame is {w}x{h} but the first-frame mask {self.masks[0]} is {first.shape[1]}x{first.shape[0]}"
                )


def _list_frames(frame_dir: Path) -> tuple[list[Path], dict[str, int]]:
    """A sequence's JPEG frames in order and {file stem: frame index}.

    Raises:
        DataError: fewer than 2 frames (nothing to propagate to).
    """
    frames = sorted(frame_dir.glob("*.jpg"))
    if len(frames) < 2:
        raise DataError(frame_dir, f"sequence has {len(frames)} frame(s); propagation needs at least 2")
    return frames, {p.stem: i for i, p in enumerate(frames)}


# name → (folder below data.root, image-set file, layout)
BENCHMARK_LAYOUTS = {
    "demo": ("", "ImageSets/2017/val.txt", "davis2017"),
    "davis2017": ("davis2017_trainval/DAVIS", "ImageSets/2017/val.txt", "davis2017"),
    "davis2016": ("davis2016/DAVIS", "ImageSets/480p/val.txt", "davis2016"),
}
# The folder's first part is the dataset's name in hvc/data/datasets.yaml: `hvc fetch NAME`
# extracts it to data.root/NAME.


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
        DataError: the split file is missing or empty, names a missing sequence (or, for
            DAVIS 2016, a missing frame or mask), a sequence has fewer than 2 frames, a
            mask has no frame of the same name, or the first frame has no mask.
    """
    root = Path(root)
    split = root / image_set
    try:
        lines = [ln.strip() for ln in split.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except FileNotFoundError:
        raise DataError(split, "image-set file not found") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise DataError(split, f"not a text file of sequence names ({e})") from None
    if not lines:
        raise DataError(split, "image-set file lists no sequences")
    if layout == "davis2016":
        _check_listed_pairs(root, split, lines, resolution)
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
        frames, stems = _list_frames(frame_dir)
        masks = {}
        for m in sorted(mask_dir.glob("*.png")):
            if m.stem not in stems:
                raise DataError(m, f"mask has no frame {m.stem}.jpg in {frame_dir}")
            masks[stems[m.stem]] = m
        if 0 not in masks:
            raise DataError(mask_dir / f"{frames[0].stem}.png", f"first-frame annotation of sequence {name!r} not found")
        videos.append(Video(name, frames, masks))
    return videos


def _check_listed_pairs(root: Path, split: Path, lines: list[str], resolution: str) -> None:
    """Every ``<frame.jpg> <mask.png>`` pair of a DAVIS 2016 split file exists below ``root``."""
    for n, line in enumerate(lines, 1):
        listed = line.split()
        if len(listed) != 2:
            raise DataError(split, f"line {n}: expected '<frame.jpg> <mask.png>', got {line!r}")
        for rel in listed:
            path = root / rel.lstrip("/")
            if path.is_file():
                continue
            seq_dir = root / "JPEGImages" / resolution / Path(listed[0]).parent.name
            if not seq_dir.is_dir():
                raise DataError(split, f"line {n} names sequence {seq_dir.name!r} but {seq_dir} does not exist")
            raise DataError(split, f"line {n} names {rel} but {path} does not exist")


def read_ytvos(root: Path, split: str = "valid") -> list[Video]:
    """Read a YouTube-VOS split (2018 and 2019 layout).

    ``root/<split>/meta.json`` lists the videos and, per object, its category and the
    frames it appears in::

        {"videos": {"<video>": {"objects": {"<id>": {"category": "...", "frames": ["00000", "00005", ...]}}}}}

    Frames are ``root/<split>/JPEGImages/<video>/<frame>.jpg``. Masks
    ``root/<split>/Annotations/<video>/<frame>.png`` exist (in the valid and test splits)
    only for the frames where an object first appears; every mask found becomes an entry
    of :attr:`Video.masks`.

    Args:
        root: the dataset folder (e.g. ``data/ytvos2018``).
        split: ``"valid"``, ``"test"`` or ``"train"``.
    Returns:
        the videos of ``meta.json``, sorted by name.
    Raises:
        DataError: naming ``meta.json`` when it is missing, not JSON, not of the form
            above, or lists a video, a frame or an object's first annotated frame that
            is missing on disk; naming the file for a mask without its frame or a video
            with fewer than 2 frames.
    """
    split_dir = Path(root) / split
    meta_path = split_dir / "meta.json"
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise DataError(meta_path, 'expected {"videos": {name: {"objects": {id: {"category", "frames"}}}}}')
    videos = []
    for name in sorted(meta["videos"]):
        entry = meta["videos"][name]
        objects = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise DataError(meta_path, f'video {name!r}: expected {{"objects": {{id: {{"category", "frames"}}}}}}')
        frame_dir, mask_dir = split_dir / "JPEGImages" / name, split_dir / "Annotations" / name
        if not frame_dir.is_dir():
            raise DataError(meta_path, f"lists video {name!r} but {frame_dir} does not exist")
        frames, stems = _list_frames(frame_dir)
        for obj_id, obj in objects.items():
            listed = obj.get("frames") if isinstance(obj, dict) else None
            if not isinstance(listed, list) or not listed:
                raise DataError(meta_path, f"video {name!r}, object {obj_id}: expected a non-empty list of frames")
            missing = [f for f in listed if str(f) not in stems]
            if missing:
                raise DataError(
                    meta_path,
                    f"video {name!r}, object {obj_id} appears in frame {missing[0]} "
                    f"but {frame_dir / f'{missing[0]}.jpg'} does not exist",
                )
            first = min(str(f) for f in listed)
            if not (mask_dir / f"{first}.png").is_file():
                raise DataError(
                    meta_path,
                    f"video {name!r}, object {obj_id} is first annotated in frame {first} "
                    f"but {mask_dir / f'{first}.png'} does not exist",
                )
        masks = {}
        for m in sorted(mask_dir.glob("*.png")):
            if m.stem not in stems:
                raise DataError(m, f"mask has no frame {m.stem}.jpg in {frame_dir}")
            masks[stems[m.stem]] = m
        videos.append(Video(name, frames, masks))
    return videos


def benchmark_root(name: str, data_root: Path, demo_dir: Path | None = None) -> Path:
    """The folder of benchmark ``name``: below ``data_root``, or the demo's benchmark folder.

    Raises:
        ParamsError: ``name`` has no reader, or is ``"demo"`` without ``demo_dir``.
    """
    if name == "demo":
        if demo_dir is None:
            raise ParamsError("the demo benchmark needs the demo-data folder (hvc: --demo DIR or --data DIR/benchmark)")
        return Path(demo_dir) / "benchmark"
    if name not in BENCHMARK_LAYOUTS:
        raise ParamsError(
            f"benchmark {name!r} (data.benchmarks or --benchmark) has no reader yet; "
            f"readers exist for {sorted(BENCHMARK_LAYOUTS)}"
        )
    return Path(data_root) / BENCHMARK_LAYOUTS[name][0]


def read_benchmark(name: str, root: Path) -> list[Video]:
    """Videos of benchmark ``name`` found in ``root`` (see :func:`benchmark_root`)."""
    if name not in BENCHMARK_LAYOUTS:
        benchmark_root(name, Path(root))  # raises ParamsError naming the readers there are
    _, image_set, layout = BENCHMARK_LAYOUTS[name]
    return read_davis(root, image_set, layout)
