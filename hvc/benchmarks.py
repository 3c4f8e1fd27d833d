"""Benchmark readers: each returns videos in one common form, :class:`Video`.

Benchmarks stay in their official folder layouts; :data:`BENCHMARKS` says, per benchmark,
where its folder is, which reader reads it, what is propagated and how it is scored:

- DAVIS 2016 (greyscale 0/255 masks, ``ImageSets/480p/val.txt`` listing frame/mask
  pairs), DAVIS 2017 val and test-dev (palette masks, ``ImageSets/2017/<split>.txt``
  listing sequences; test-dev has first-frame masks only) — :func:`read_davis`;
- YouTube-VOS 2018/2019 valid (``meta.json``; masks only where an object first appears,
  which become propagation inputs) — :func:`read_ytvos`;
- VOST (DAVIS 2017 layout without resolution folders) — :func:`read_vost`;
- VIP part labels — :func:`hvc.parts.read_vip`; JHMDB joints — :func:`hvc.pose.read_jhmdb`;
- the built-in demo uses the DAVIS 2017 layout.

Readers check the layout (every listed sequence, frame and annotation exists) and
:meth:`Video.check` decodes every file a video needs, so a bad input stops a stage with
a :class:`~hvc.io.DataError` naming the file before any long computation starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hvc.io import DataError, frame_order, read_image, read_json, read_lines, read_mask
from hvc.params import ParamsError


# The largest frame a video may have (4096 x 4096 pixels): every frame of a video is held
# in memory during propagation, and one 8000 x 8000 frame alone takes 192 MB decoded.
MAX_FRAME_PIXELS = 4096 * 4096


def _check_frame_size(path: Path, h: int, w: int) -> None:
    """Raise DataError naming ``path`` when an (h, w) frame or mask exceeds :data:`MAX_FRAME_PIXELS`."""
    if h * w > MAX_FRAME_PIXELS:
        raise DataError(
            path,
            f"is {w}x{h} ({h * w / 1e6:.1f} Mpixel), more than the {MAX_FRAME_PIXELS / 1e6:.1f} Mpixel a frame may have; "
            "downscale the benchmark's frames and masks",
        )


@dataclass
class Video:
    """One benchmark video.

    Attributes:
        name: sequence name.
        frames: frame files in temporal order.
        masks: {frame index: annotation file}; frame 0 always, every frame when the
            benchmark's ground truth is public.
        greyscale_labels: the masks are greyscale PNGs whose values are labels (VIP part
            ids), not DAVIS 2016 0/255 masks (see :func:`hvc.io.read_mask`).
    """

    name: str
    frames: list[Path]
    masks: dict[int, Path] = field(default_factory=dict)
    inputs: tuple[int, ...] = (0,)
    greyscale_labels: bool = False

    def read_frames(self) -> list[np.ndarray]:
        """All frames as (H, W, 3) uint8 arrays; raises DataError naming a bad file."""
        return [read_image(p) for p in self.frames]

    def first_labels(self) -> np.ndarray:
        """(H, W) uint8 label map of frame 0.

        A video whose objects all appear later (YouTube-VOS, no mask at frame 0) gets an
        all-background map; its objects start from :meth:`later_labels`.

        Raises:
            DataError: the first-frame mask is missing (when frame 0 is an input),
                unreadable, or empty while no later annotation exists.
        """
        if 0 not in self.masks:
            if self.inputs and min(self.inputs) > 0:
                first_later = read_mask(self.masks[min(self.inputs)], self.greyscale_labels)
                return np.zeros_like(first_later)
            raise DataError(self.frames[0], f"sequence {self.name!r} has no first-frame annotation")
        labels = read_mask(self.masks[0], self.greyscale_labels)
        if labels.max() == 0 and len(self.inputs) <= 1:
            raise DataError(self.masks[0], "first-frame mask is empty: no object to propagate")
        return labels

    def later_labels(self) -> dict[int, np.ndarray]:
        """{t: (H, W) uint8 label map} of the input annotations after frame 0: objects
        that first appear at frame t (YouTube-VOS); empty for DAVIS-style benchmarks,
        whose later masks are ground truth, not input."""
        return {t: read_mask(self.masks[t], self.greyscale_labels) for t in self.inputs if t > 0}

    def check(self) -> None:
        """Decode every frame and the first-frame mask once, without keeping them.

        The propagate stage calls this for every video before it starts, so that a
        corrupt file in the last video costs seconds, not the hours spent on the videos
        before it.

        Raises:
            DataError: naming the file: a missing, unreadable or truncated frame or
                first-frame mask, an empty first-frame mask, a frame larger than
                :data:`MAX_FRAME_PIXELS`, or a frame whose size differs from the
                first-frame mask's.
        """
        first = self.first_labels()
        _check_frame_size(self.masks.get(0, self.frames[0]), *first.shape)
        for t, later in self.later_labels().items():
            if later.shape != first.shape:
                raise DataError(self.masks[t], f"mask is {later.shape[1]}x{later.shape[0]} but frame 0's is {first.shape[1]}x{first.shape[0]}")
        for path in self.frames:
            h, w = read_image(path).shape[:2]
            _check_frame_size(path, h, w)
            if (h, w) != first.shape:
                raise DataError(
                    path, f"frame is {w}x{h} but the first-frame mask {self.masks[0]} is {first.shape[1]}x{first.shape[0]}"
                )


def _list_frames(frame_dir: Path) -> tuple[list[Path], dict[str, int]]:
    """A sequence's JPEG frames in order (numeric names by number) and {file stem: frame index}.

    Raises:
        DataError: fewer than 2 frames (nothing to propagate to).
    """
    frames = sorted(frame_dir.glob("*.jpg"), key=frame_order)  # 2 before 10 without zero padding
    if len(frames) < 2:
        raise DataError(frame_dir, f"sequence has {len(frames)} frame(s); propagation needs at least 2")
    return frames, {p.stem: i for i, p in enumerate(frames)}


def match_masks(mask_dir: Path, frame_dir: Path, stems: dict[str, int]) -> dict[int, Path]:
    """{frame index: mask file} of the PNG masks in ``mask_dir`` (none if it does not exist).

    Raises:
        DataError: naming a mask whose frame (same name, ``.jpg``) is not in ``frame_dir``.
    """
    masks = {}
    for m in sorted(mask_dir.glob("*.png")):
        if m.stem not in stems:
            raise DataError(m, f"mask has no frame {m.stem}.jpg in {frame_dir}")
        masks[stems[m.stem]] = m
    return masks


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
        masks = match_masks(mask_dir, frame_dir, stems)
        videos.append(Video(name, frames, masks, inputs=tuple(sorted(masks))))
    return videos


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


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark is found, read, propagated and scored.

    Attributes:
        folder: its folder below ``data.root``; the first part is the dataset's name in
            ``hvc/data/datasets.yaml`` (``hvc fetch NAME`` extracts it to data.root/NAME).
        reader: ``"davis2017"``, ``"davis2017_testdev"``, ``"davis2016"``, ``"ytvos"``,
            ``"vost"``, ``"vip"`` or ``"jhmdb"``; see :meth:`read`.
        task: what is propagated: ``"vos"`` object masks, ``"parts"`` part labels at
            560x560 (VIP), ``"pose"`` joints at 320x320 (JHMDB) (paper §4.1).
        scoring: ``"davis"`` J&F (DAVIS toolkit), ``"vost"`` J and J on the last 25% of
            frames (VOST toolkit), ``"server"`` ground truth not public: a submission
            archive plus the server's score file, ``"miou"`` part mIoU, ``"pck"`` PCK.
        annotations: ground-truth folder below the benchmark folder (davis, vost scoring).
        server: where the submission archive is uploaded (server scoring).
        archive_prefix: folder inside the submission archive that holds
            ``<video>/<frame>.png`` (YouTube-VOS: ``Annotations``; DAVIS: none).
    """

    folder: str
    reader: str
    task: str = "vos"
    scoring: str = "davis"
    annotations: str = ""
    server: str = ""
    archive_prefix: str = ""

    def read(self, root: Path) -> list:
        """The videos found in ``root`` (the benchmark's folder), in the benchmark's order.

        Returns :class:`Video` objects (``hvc.pose.PoseVideo`` for JHMDB).
        Raises:
            DataError: naming the file or folder that is missing or malformed.
        """
        root = Path(root)
        if self.reader == "davis2017":
            return read_davis(root, "ImageSets/2017/val.txt", "davis2017")
        if self.reader == "davis2017_testdev":
            return read_davis(root, "ImageSets/2017/test-dev.txt", "davis2017")
        if self.reader == "davis2016":
            return read_davis(root, "ImageSets/480p/val.txt", "davis2016")
        if self.reader == "ytvos":
            return read_ytvos(root, "valid")
        if self.reader == "vost":
            return read_vost(root)
        if self.reader == "vip":
            from hvc.parts import read_vip

            return read_vip(root)
        if self.reader == "jhmdb":
            from hvc.pose import read_jhmdb

            return read_jhmdb(root)
        raise ValueError(f"unknown reader {self.reader!r}")


_CODALAB = "https://codalab.lisn.upsaclay.fr"
# name → how to find, read, propagate and score it (params: data.benchmarks)
BENCHMARKS: dict[str, Benchmark] = {
    "demo": Benchmark("", "davis2017", annotations="Annotations/480p"),
    "davis2017": Benchmark("davis2017_trainval/DAVIS", "davis2017", annotations="Annotations/480p"),
    "davis2016": Benchmark("davis2016/DAVIS", "davis2016", annotations="Annotations/480p"),
    "davis2017_testdev": Benchmark(
        "davis2017_testdev/DAVIS", "davis2017_testdev", scoring="server",
        server=f"{_CODALAB} (DAVIS Challenge, semi-supervised, test-dev phase)",
    ),
    "ytvos2018": Benchmark(
        "ytvos2018_val", "ytvos", scoring="server", archive_prefix="Annotations",
        server=f"{_CODALAB} (YouTube-VOS 2018, semi-supervised VOS, valid phase)",
    ),
    "ytvos2019": Benchmark(
        "ytvos2019_val", "ytvos", scoring="server", archive_prefix="Annotations",
        server=f"{_CODALAB} (YouTube-VOS 2019, semi-supervised VOS, valid phase)",
    ),
    "vost": Benchmark("vost/VOST", "vost", scoring="vost", annotations="Annotations"),
    "vip": Benchmark("vip", "vip", task="parts", scoring="miou"),
    "jhmdb": Benchmark("jhmdb", "jhmdb", task="pose", scoring="pck"),
}  # fmt: skip


def benchmark_root(name: str, data_root: Path, demo_dir: Path | None = None) -> Path:
    """The folder of benchmark ``name``: below ``data_root``, or the demo's benchmark folder.

    Raises:
        ParamsError: ``name`` is not a benchmark, or is ``"demo"`` without ``demo_dir``.
    """
    if name == "demo":
        if demo_dir is None:
            raise ParamsError("the demo benchmark needs the demo-data folder (hvc: --demo DIR or --data DIR/benchmark)")
        return Path(demo_dir) / "benchmark"
    return Path(data_root) / get_benchmark(name).folder


def get_benchmark(name: str) -> Benchmark:
    """The :class:`Benchmark` called ``name``; ParamsError naming the known ones otherwise."""
    if name not in BENCHMARKS:
        raise ParamsError(f"benchmark {name!r} (data.benchmarks or --benchmark) is not one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def read_benchmark(name: str, root: Path) -> list:
    """Videos of benchmark ``name`` found in ``root`` (see :func:`benchmark_root`)."""
    return get_benchmark(name).read(root)
