"""Benchmark readers: each returns videos in one common form, :class:`Video`.

Benchmarks stay in their official folder layouts; :data:`hvc.config.benchmarks.BENCHMARKS` says, per benchmark,
where its folder is, which reader reads it, what is propagated and how it is scored:

- DAVIS 2016 (greyscale 0/255 masks, ``ImageSets/480p/val.txt`` listing frame/mask
  pairs), DAVIS 2017 val and test-dev (palette masks, ``ImageSets/2017/<split>.txt``
  listing sequences; test-dev has first-frame masks only) — :func:`read_davis`;
- YouTube-VOS 2018/2019 valid (``meta.json``; masks only where an object first appears,
  which become propagation inputs) — :func:`read_ytvos`;
- VOST (DAVIS 2017 layout without resolution folders) — :func:`read_vost`;
- VIP part labels — :func:`hvc.eval.parts.read_vip`; JHMDB joints — :func:`hvc.eval.pose.read_jhmdb`;
- the built-in demo uses the DAVIS 2017 layout.

Readers check the layout (every listed sequence, frame and annotation exists) and
:meth:`Video.check` decodes every file a video needs, so a bad input stops a stage with
a :class:`~hvc.io.DataError` naming the file before any long computation starts.
"""

from __future__ import annotations

from pathlib import Path


from hvc.eval.parts import read_vip
from hvc.eval.pose import read_jhmdb
from hvc.config.benchmarks import get_benchmark
from hvc.config.registry import load_function
from hvc.eval.video import Video, check_sequence_name, list_frames, match_masks
from hvc.io import DataError, read_json, read_lines


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
    lines = read_lines(split, "image-set file")
    if not lines:
        raise DataError(split, "image-set file lists no sequences")
    if layout == "davis2016":
        _check_listed_pairs(root, split, lines, resolution)
        names = list(dict.fromkeys(Path(ln.split()[0]).parent.name for ln in lines))
    elif layout == "davis2017":
        names = [check_sequence_name(split, n, name) for n, name in enumerate(lines, 1)]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    videos = []
    for name in names:
        frame_dir = root / "JPEGImages" / resolution / name
        mask_dir = root / "Annotations" / resolution / name
        if not frame_dir.is_dir():
            raise DataError(split, f"names sequence {name!r} but {frame_dir} does not exist")
        frames, stems = list_frames(frame_dir)
        masks = match_masks(mask_dir, frame_dir, stems)
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
        for rel in listed:  # /JPEGImages/480p/<sequence>/<frame>: no way out of the benchmark
            if any(part in ("..", ".") for part in rel.split("/")) or "\\" in rel:
                raise DataError(split, f"line {n}: path {rel!r} holds '..' or '.'; expected /JPEGImages/480p/<sequence>/<frame>.jpg")
        check_sequence_name(split, n, Path(listed[0]).parent.name)
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
    for n, name in enumerate(sorted(meta["videos"]), 1):
        check_sequence_name(meta_path, n, name, "video")
        entry = meta["videos"][name]
        objects = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise DataError(meta_path, f'video {name!r}: expected {{"objects": {{id: {{"category", "frames"}}}}}}')
        frame_dir, mask_dir = split_dir / "JPEGImages" / name, split_dir / "Annotations" / name
        if not frame_dir.is_dir():
            raise DataError(meta_path, f"lists video {name!r} but {frame_dir} does not exist")
        frames, stems = list_frames(frame_dir)
        _check_ytvos_objects(meta_path, name, objects, frame_dir, mask_dir, stems)
        masks = match_masks(mask_dir, frame_dir, stems)
        videos.append(Video(name, frames, masks, inputs=tuple(sorted(masks))))
    return videos


def _check_ytvos_objects(meta_path: Path, name: str, objects: dict, frame_dir: Path, mask_dir: Path, stems) -> None:
    """Every object of video ``name`` in meta.json lists frames that exist, and its first
    frame has a mask; DataError naming meta.json otherwise."""
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


def read_vost(root: Path, split: str = "val") -> list[Video]:
    """Read VOST (the DAVIS 2017 layout without resolution folders).

    ``root/ImageSets/<split>.txt`` lists sequence names; frames are
    ``root/JPEGImages/<seq>/*.jpg`` and annotations ``root/Annotations/<seq>/*.png``
    (palette, one index per object, 255 void). Propagation runs through every frame;
    the VOST toolkit scores only the annotated ones (``evaluation/source/dataset.py``
    of github.com/TRI-ML/VOST).

    Raises:
        DataError: as :func:`read_davis`.
    """
    return read_davis(Path(root), f"ImageSets/{split}.txt", "davis2017", resolution="")


def read_benchmark(name: str, root: Path) -> list:
    """The videos of benchmark ``name`` found in ``root`` (its folder, see
    :func:`hvc.config.benchmarks.benchmark_root`), in the benchmark's order.

    Returns :class:`~hvc.eval.video.Video` objects (:class:`hvc.eval.pose.PoseVideo` for JHMDB).
    Raises:
        ParamsError: ``name`` is not a benchmark.
        DataError: naming the file or folder that is missing or malformed.
    """
    return load_function(get_benchmark(name).reader)(Path(root))


def read_davis2017_val(root: Path) -> list[Video]:
    """DAVIS 2017 val (ImageSets/2017/val.txt); also the demo benchmark's layout."""
    return read_davis(root, "ImageSets/2017/val.txt", "davis2017")


def read_davis2017_testdev(root: Path) -> list[Video]:
    """DAVIS 2017 test-dev (ImageSets/2017/test-dev.txt; first-frame masks only)."""
    return read_davis(root, "ImageSets/2017/test-dev.txt", "davis2017")


def read_davis2016_val(root: Path) -> list[Video]:
    """DAVIS 2016 val (ImageSets/480p/val.txt; single-object masks)."""
    return read_davis(root, "ImageSets/480p/val.txt", "davis2016")


def read_ytvos_valid(root: Path) -> list[Video]:
    """YouTube-VOS 2018/2019 valid (objects appearing later start from their first annotation)."""
    return read_ytvos(root, "valid")
