"""Training images ↔ webdataset tar shards.

Writing: the original encoded bytes of every image (no re-encode), in a deterministic
order, to ``{dataset}-{split}-{index:06d}.tar`` with an ``index.json`` giving each
shard's sample count and SHA-256. Every image is decoded once to check it; an unreadable
one fails the stage or is skipped and listed in the report (``shards.on_bad_image``).

Videos (for methods trained on clips, :mod:`hvc.config.registry`): one sample per video
holding its frames' original bytes as ``00000.jpg``, ``00001.jpg``, ... in time order, the
index marked ``"unit": "video"`` with each shard's shortest video (``min_frames``).

Reading: :class:`TrainStream` streams training batches from the shards (two views of an
image, or a clip of T frames of a video, per the method's :class:`~hvc.methods.base.DataSpec`),
split across distributed ranks and loader workers by shard, reproducibly: the order and the
samples of epoch e depend only on (seed, e), so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from hvc.config.params import Params, ParamsError
from hvc.io import DataError, atomic_dir, decode_image, read_bytes, read_json, sha256_file, write_json
from hvc.methods import batch_kind
from hvc.methods.base import DataSpec
from hvc.config.code import provenance
from hvc.config.datasets import TRAIN_SET_GLOBS, TRAIN_VIDEO_GLOBS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

def list_training_images(root: Path, train_set: str, step: int = 1) -> list[Path]:
    """Sorted image files of a training set, keeping every ``step``-th (Table 7a).

    Args:
        root: the dataset folder (for ``demo``, the demo-data output folder).
        train_set: a key of :data:`TRAIN_SET_GLOBS`.
        step: keep images 0, step, 2*step, ... of the sorted list.
    Raises:
        DataError: the folder holds no images (names the folder and the pattern).
    """
    pattern = TRAIN_SET_GLOBS[train_set]
    files = sorted(p for p in Path(root).glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(root, f"no training images match {pattern!r}")
    return files[::step]


def list_training_videos(root: Path, train_set: str, step: int = 1) -> list[tuple[str, list[Path]]]:
    """The videos of a training set, sorted by name, keeping every ``step``-th video.

    Args:
        root: the dataset folder (for ``demo``, the demo-data output folder).
        train_set: a key of :data:`TRAIN_VIDEO_GLOBS`.
        step: keep videos 0, step, 2*step, ... of the sorted list.
    Returns:
        (sample key, frame files in name order) per video; folders without frames are left out.
    Raises:
        ParamsError: the training set has no videos (a static-image set).
        DataError: the folder holds no video folders with frames (names the folder and pattern).
    """
    if train_set not in TRAIN_VIDEO_GLOBS:
        raise ParamsError(f"data.train_set = {train_set!r} has no videos; clip methods train on {sorted(TRAIN_VIDEO_GLOBS)}")
    pattern = TRAIN_VIDEO_GLOBS[train_set]
    videos = []
    for folder in sorted(p for p in Path(root).glob(pattern) if p.is_dir()):
        frames = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if frames:
            videos.append((_sample_key(folder, root), frames))
    if not videos:
        raise DataError(root, f"no training videos (folders of frames) match {pattern!r}")
    return videos[::step]


def _sample_key(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return str(rel).replace("/", "__").replace(".", "_")


def _read_checked(path: Path) -> bytes:
    """The file's bytes after checking that they decode as an image (DataError otherwise)."""
    data = read_bytes(path, "image")  # unreadable (permissions, symlink loop): a bad image too
    decode_image(data, path)
    return data


def _ext(path: Path) -> str:
    return "png" if path.suffix.lower() == ".png" else "jpg"


def _skip_or_raise(e: DataError, on_bad_image: str, video: str | None = None) -> dict:
    """The report entry of a bad image when ``on_bad_image == "skip"``; raises ``e`` on ``"fail"``."""
    if on_bad_image == "fail":
        raise e
    log.warning("skipping %s%s", f"video {video}: " if video else "", e)
    entry = {"file": str(e.path), "error": e.problem}
    return {"video": video, **entry} if video else entry


def _write_indexed(
    samples: Iterator, out_dir: Path, prefix: str, sizes: tuple[float, int], unit: str, total: int, method: str
) -> dict:
    """Write webdataset samples into shards in ``out_dir`` (atomically), then ``index.json``
    and ``report.json``.

    Args:
        samples: yields (sample dict, None) or (None, report entry of a skipped input).
        sizes: (max_size_mb, max_count) per shard.
        unit: ``"img"`` or ``"video"`` (video shards record each shard's ``min_frames``).
        total: number of inputs (progress bar).
    Returns:
        the index.
    """
    from tqdm import tqdm

    skipped: list[dict] = []
    frames: dict[str, int] = {}
    with atomic_dir(out_dir) as tmp:
        pattern = str(tmp / f"{prefix}-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=sizes[1], maxsize=sizes[0] * 2**20, verbose=0, mtime=0.0) as sink:
            for sample, skip in tqdm(samples, desc=f"shards {prefix}", unit=unit, total=total, mininterval=2.0):
                if sample is None:
                    skipped.append(skip)
                    continue
                sink.write(sample)
                frames[sample["__key__"]] = len(sample) - 1
        shards = []
        for tar in sorted(tmp.glob(f"{prefix}-*.tar")):
            keys = [x["__key__"] for x in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False)]
            entry = {"name": tar.name, "count": len(keys), "sha256": sha256_file(tar), "bytes": tar.stat().st_size}
            if unit == "video":
                entry["min_frames"] = min(frames[k] for k in keys)
            shards.append(entry)
        index = {
            "prefix": prefix,
            "num_samples": sum(s["count"] for s in shards),
            "num_skipped": len(skipped),
            "shards": shards,
            "provenance": provenance("shards", method),
        }
        if unit == "video":
            index["unit"] = "video"
        write_json(tmp / "index.json", index)
        write_json(tmp / "report.json", {"skipped": skipped})
    return index


def write_shards(
    images: list[Path],
    root: Path,
    out_dir: Path,
    prefix: str,
    max_size_mb: float = 256.0,
    max_count: int = 100_000,
    on_bad_image: str = "fail",
    method: str = "hvc",
) -> dict:
    """Write ``images`` to webdataset shards in ``out_dir`` (atomically) and index them.

    Args:
        images: image files in the order they go into the shards.
        root: folder the sample keys are taken relative to.
        out_dir: output folder; gets ``{prefix}-{index:06d}.tar``, ``index.json`` and
            ``report.json`` (skipped images with their errors).
        prefix: ``{dataset}-{split}``.
        max_size_mb, max_count: shard size targets.
        on_bad_image: ``"fail"`` raises on the first unreadable image; ``"skip"`` leaves
            it out and lists it in the report.
        method: the trained method (``params.method``), for the code hash in the provenance.
    Returns:
        the index: ``{"shards": [{"name", "count", "sha256", "bytes"}], "num_samples", ...,
        "provenance"}`` (:func:`hvc.config.code.provenance`).
    Raises:
        DataError: an unreadable image when ``on_bad_image == "fail"`` (names the file).
    """

    def samples() -> Iterator:
        for path in images:
            try:
                data = _read_checked(path)
            except DataError as e:
                yield None, _skip_or_raise(e, on_bad_image)
                continue
            yield {"__key__": _sample_key(path, root), _ext(path): data}, None

    return _write_indexed(samples(), Path(out_dir), prefix, (max_size_mb, max_count), "img", len(images), method)


def write_video_shards(
    videos: list[tuple[str, list[Path]]],
    out_dir: Path,
    prefix: str,
    max_size_mb: float = 256.0,
    max_count: int = 100_000,
    on_bad_image: str = "fail",
    method: str = "hvc",
) -> dict:
    """Write one sample per video (its frames' original bytes as ``00000.jpg``, ``00001.jpg``,
    ... in time order) to webdataset shards in ``out_dir`` (atomically) and index them.

    Args:
        videos: (sample key, frame files in time order) per video (:func:`list_training_videos`).
        out_dir, prefix, max_size_mb, max_count: as for :func:`write_shards`.
        on_bad_image: ``"fail"`` raises on the first unreadable frame; ``"skip"`` leaves
            its whole video out and lists it in the report.
    Returns:
        the index as :func:`write_shards`'s, plus ``"unit": "video"`` and per shard
        ``min_frames`` (the frame count of its shortest video).
    Raises:
        DataError: an unreadable frame when ``on_bad_image == "fail"`` (names the file).
    """

    def samples() -> Iterator:
        for key, frames in videos:
            try:
                sample = {f"{i:05d}.{_ext(f)}": _read_checked(f) for i, f in enumerate(frames)}
            except DataError as e:
                yield None, _skip_or_raise(e, on_bad_image, key)
                continue
            yield {"__key__": key, **sample}, None

    return _write_indexed(samples(), Path(out_dir), prefix, (max_size_mb, max_count), "video", len(videos), method)


def write_training_shards(p: Params, root: Path, out_dir: Path) -> dict:
    """The shard stage: the training set ``p.data.train_set`` below ``root`` as image shards
    (:func:`write_shards`) or, when ``p.method`` trains on clips, as video shards
    (:func:`write_video_shards`), named ``{train_set}-train-NNNNNN.tar``.

    Raises:
        ParamsError: a clip method with a training set that has no videos.
        DataError: no training images/videos, or an unreadable one (``shards.on_bad_image``).
    """
    s, prefix = p.shards, f"{p.data.train_set}-train"
    if batch_kind(p.method) == "clips":
        videos = list_training_videos(root, p.data.train_set, s.step)
        return write_video_shards(videos, out_dir, prefix, s.max_size_mb, s.max_count, s.on_bad_image, p.method)
    images = list_training_images(root, p.data.train_set, s.step)
    return write_shards(images, root, out_dir, prefix, s.max_size_mb, s.max_count, s.on_bad_image, p.method)


def read_index(shard_dir: Path) -> dict:
    """Read and check ``index.json`` of a shard folder (every listed shard must exist)."""
    index = read_json(Path(shard_dir) / "index.json")
    for s in index.get("shards", []):
        if not (Path(shard_dir) / s["name"]).is_file():
            raise DataError(Path(shard_dir) / s["name"], "shard listed in index.json is missing")
    if not index.get("shards"):
        raise DataError(Path(shard_dir) / "index.json", "no shards listed")
    return index


def verify_shards(shard_dir: Path, full: bool = True, rank: int = 0, world_size: int = 1) -> dict:
    """Check the shards against ``index.json`` before training reads them.

    Every shard's size is compared with the index's ``bytes`` (a stat, always); with
    ``full``, its SHA-256 with the index's ``sha256`` (one read of the shard). Under
    distributed training the hashing is shared: rank r hashes shards r, r + world_size,
    ..., so each shard is read once per run.

    Args:
        shard_dir: folder with ``index.json`` and the tar shards.
        full: also compare SHA-256 checksums (False: sizes only, for quick restarts).
        rank, world_size: this process's share of the hashing.
    Returns:
        the index.
    Raises:
        DataError: naming the shard whose size or checksum differs from index.json (it
            was replaced or edited after the shard stage wrote it).
    """
    shard_dir = Path(shard_dir)
    index = read_index(shard_dir)
    for i, s in enumerate(index["shards"]):
        path = shard_dir / s["name"]
        size = path.stat().st_size
        changed = "; the shard changed after the shard stage wrote it: rebuild the shards (hvc shards)"
        if s.get("bytes") is not None and size != s["bytes"]:
            raise DataError(path, f"is {size} bytes but index.json lists {s['bytes']}{changed}")
        if full and i % world_size == rank:
            digest = sha256_file(path)
            if digest != s.get("sha256"):
                raise DataError(path, f"sha256 {digest} differs from index.json's {s.get('sha256')}{changed}")
    return index


def _seed(*parts: object) -> int:
    """A 60-bit seed derived from ``parts`` (stable across processes, unlike ``hash``)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def video_id(key: str) -> int:
    """The integer id of a training video (its sample key hashed to 60 bits; the same in
    every process and run), which clip methods use to tell videos apart, e.g. LIIR's
    memory bank keeps a clip's own video out of its negatives."""
    return _seed("video", key)


def _bad_shard(exn: Exception) -> bool:
    """webdataset error handler: a truncated or corrupt tar becomes a DataError naming the shard."""
    url = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "<shard>")
    raise DataError(url, f"corrupt or truncated shard ({type(exn).__name__}: {exn.args[0] if exn.args else exn})")


class TrainStream(IterableDataset):
    """Training batches streamed from shards (use with ``DataLoader(batch_size=None)``).

    Each epoch the shard list is shuffled with seed (seed, epoch) and dealt round-robin to
    the ``world_size * num_workers`` readers; each reader shuffles its samples in a
    buffer seeded by (seed, epoch, slot) and seeds torch before each sample with
    (seed, epoch, key), so batches depend only on the seed and the epoch. Every reader
    yields the same number of batches (``batches_per_reader``), so the DataLoader's
    round-robin over workers is fixed and a resumed epoch can skip batches without
    decoding them (``skip_batches``).

    ``kind="views"``: ``views`` gets each decoded image (3, H, W) uint8; from video shards
    (a method whose phases read images, then clips), one frame per video and epoch, drawn
    uniformly after seeding.
    ``kind="clips"`` (video shards, :func:`write_video_shards`): one clip per video and
    epoch, frames ``s, s + frame_gap, ..., s + (clip_length - 1) * frame_gap`` for a start
    ``s`` drawn uniformly (after seeding) among those that fit; ``views`` gets them as
    (T, 3, H, W) uint8, and only those T frames are decoded. When ``views`` returns a dict,
    the stream adds ``"video_id"``: () int64, the clip's video (:func:`video_id`).

    Yields:
        the per-sample results of ``views`` stacked along a new batch dimension of the
        per-rank batch size b: a tuple (e.g. :class:`~hvc.methods.hvc.views.TwoViews`:
        (v1, v2, box1, box2), (b, 3, S, S) x 2 and (b, 4) x 2) or a dict of tensors.
    Raises:
        DataError: fewer shards than readers, fewer samples than one batch per reader,
            image shards for clips (or the reverse), or a video shorter than one clip.
    """

    def __init__(
        self,
        shard_dir: Path,
        views: Callable[[torch.Tensor], Any],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        kind: str = "views",
        clip_length: int = 1,
        frame_gap: int = 1,
    ) -> None:
        super().__init__()
        self.shard_dir = Path(shard_dir)
        index = read_index(self.shard_dir)
        self.shards = [(s["name"], s["count"]) for s in index["shards"]]
        self.views, self.batch_size, self.seed = views, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.num_workers = max(num_workers, 1)
        self.readers = world_size * self.num_workers
        self.shuffle_buffer = shuffle_buffer
        self.epoch, self.skip_batches = 0, 0
        self.spec = DataSpec(kind, views, clip_length, frame_gap)
        self._check_unit(index)
        if len(self.shards) < self.readers:
            raise DataError(
                self.shard_dir,
                f"{len(self.shards)} shard(s) for {self.readers} readers (GPUs x loader workers): "
                "write smaller shards (shards.max_count) or use fewer train.workers",
            )
        # The smallest per-reader sample count over all epochs bounds the batches per reader.
        counts = sorted((c for _, c in self.shards))
        per_reader_min = sum(counts[: len(counts) // self.readers])
        self.batches_per_reader = per_reader_min // batch_size
        if self.batches_per_reader == 0:
            raise DataError(
                self.shard_dir,
                f"too few samples for one batch of {batch_size} per reader ({self.readers} readers)",
            )

    def _check_unit(self, index: dict) -> None:
        """Video shards long enough for one clip for clips; image shards, or video shards
        (one frame of a video is an image), for views."""
        unit = self.unit = index.get("unit", "image")
        wanted = "video" if self.spec.kind == "clips" else unit
        if unit != wanted:
            raise DataError(
                self.shard_dir / "index.json",
                f"holds {unit} shards but the method trains on {self.spec.kind}: rebuild the shards for this method",
            )
        if self.spec.kind == "clips":
            shortest = min(s["min_frames"] for s in index["shards"])
            if shortest < self.spec.span:
                raise DataError(
                    self.shard_dir / "index.json",
                    f"a video has {shortest} frames, fewer than one clip of {self.spec.clip_length} frames "
                    f"{self.spec.frame_gap} apart spans ({self.spec.span})",
                )

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.batches_per_reader * self.num_workers

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch and how many of this rank's batches to skip (resume)."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def _slot_shards(self, worker: int) -> list[str]:
        order = [name for name, _ in self.shards]
        random.Random(_seed(self.seed, self.epoch, "shards")).shuffle(order)
        slot = self.rank * self.num_workers + worker
        return [str(self.shard_dir / n) for n in order[slot :: self.readers]]

    def _sample(self, sample: dict) -> Any:
        """One training example: seed torch by (seed, epoch, key), decode, transform."""
        where = f"{sample.get('__url__')}:{sample['__key__']}"
        torch.manual_seed(_seed(self.seed, self.epoch, sample["__key__"]))
        names = sorted(k for k in sample if not k.startswith("__"))
        if self.spec.kind == "views":
            if self.unit == "video":  # one frame of the video, drawn after seeding
                name = names[int(torch.randint(len(names), ()))]
                return self.views(torch.from_numpy(decode_image(sample[name], f"{where}/{name}")).permute(2, 0, 1))
            data = sample.get("jpg", sample.get("png"))
            return self.views(torch.from_numpy(decode_image(data, where)).permute(2, 0, 1))
        if len(names) < self.spec.span:
            raise DataError(where, f"{len(names)} frames, fewer than one clip spans ({self.spec.span})")
        start = int(torch.randint(len(names) - self.spec.span + 1, ()))
        picked = names[start : start + self.spec.span : self.spec.frame_gap]
        frames = [torch.from_numpy(decode_image(sample[n], f"{where}/{n}")).permute(2, 0, 1) for n in picked]
        if any(f.shape != frames[0].shape for f in frames):
            raise DataError(where, f"frames of different sizes {sorted({tuple(f.shape) for f in frames})}")
        out = self.views(torch.stack(frames))
        if isinstance(out, dict):
            out["video_id"] = torch.tensor(video_id(sample["__key__"]), dtype=torch.long)
        return out

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        # DataLoader takes batch k from worker k % num_workers: skip this worker's share.
        skip = sum(1 for k in range(self.skip_batches) if k % self.num_workers == worker)
        urls = self._slot_shards(worker)
        slot = self.rank * self.num_workers + worker
        rng = random.Random(_seed(self.seed, self.epoch, "buffer", slot))
        samples = wds.WebDataset(
            urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False, handler=_bad_shard
        ).shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)
        batch: list[Any] = []
        for n, sample in enumerate(samples):
            if n >= self.batches_per_reader * self.batch_size:
                break
            if n < skip * self.batch_size:
                continue  # resumed epoch: already trained on, not decoded
            batch.append(self._sample(sample))
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []


def collate(examples: list[Any]) -> Any:
    """Stack per-sample tuples (or dicts) of tensors along a new first dimension."""
    if isinstance(examples[0], dict):
        return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    return tuple(torch.stack(x) for x in zip(*examples))


def make_stream(
    shard_dir: Path, spec: DataSpec, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0
) -> TrainStream:
    """The training stream of a method's :class:`~hvc.methods.base.DataSpec` (see :class:`TrainStream`).

    Raises:
        DataError: as :class:`TrainStream`.
    """
    return TrainStream(
        shard_dir,
        spec.transform,
        batch_size,
        seed,
        rank,
        world_size,
        num_workers,
        kind=spec.kind,
        clip_length=spec.clip_length,
        frame_gap=spec.frame_gap,
    )
