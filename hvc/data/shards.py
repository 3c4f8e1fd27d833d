"""Training images ↔ webdataset tar shards.

Writing: the original encoded bytes of every image (no re-encode), in a deterministic
order, to ``{dataset}-{split}-{index:06d}.tar`` with an ``index.json`` giving each
shard's sample count and SHA-256. Every image is decoded once to check it; an unreadable
one fails the stage or is skipped and listed in the report (``shards.on_bad_image``).

Reading: :class:`TrainStream` streams two-view training batches from the shards, split
across distributed ranks and loader workers by shard, reproducibly: the order and the
views of epoch e depend only on (seed, e), so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from hvc.io import DataError, atomic_dir, decode_image, read_bytes, read_json, sha256_file, write_json
from hvc.methods.hvc.views import TwoViews
from hvc.config.code import provenance

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Each training set: its dataset in the registry (hvc/data/datasets.yaml; `hvc fetch NAME`
# extracts it to data.root/NAME) and where its images lie below data.root. YouTube-VOS
# frames are separate images (HVC-YT).
TRAIN_SET_DATASETS = {
    "coco": "coco2017_train",
    "voc": "voc2012_trainval",
    "msra10k": "msra10k",
    "ytvos": "ytvos2018_train",
}
TRAIN_SET_GLOBS = {
    "demo": "train/*",
    "coco": "coco2017_train/train2017/*.jpg",
    "voc": "voc2012_trainval/VOCdevkit/VOC2012/JPEGImages/*.jpg",
    "msra10k": "msra10k/MSRA10K_Imgs_GT/Imgs/*.jpg",
    "ytvos": "ytvos2018_train/train_all_frames/JPEGImages/*/*.jpg",
}


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


def _sample_key(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return str(rel).replace("/", "__").replace(".", "_")


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
    from tqdm import tqdm

    skipped = []
    with atomic_dir(out_dir) as tmp:
        pattern = str(tmp / f"{prefix}-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=max_count, maxsize=max_size_mb * 2**20, verbose=0, mtime=0.0) as sink:
            for path in tqdm(images, desc=f"shards {prefix}", unit="img", mininterval=2.0):
                try:
                    data = read_bytes(path, "image")  # unreadable (permissions, symlink loop): a bad image too
                    decode_image(data, path)
                except DataError as e:
                    if on_bad_image == "fail":
                        raise
                    skipped.append({"file": str(path), "error": e.problem})
                    log.warning("skipping %s", e)
                    continue
                ext = "png" if path.suffix.lower() == ".png" else "jpg"
                sink.write({"__key__": _sample_key(path, root), ext: data})
        shards = []
        for tar in sorted(tmp.glob(f"{prefix}-*.tar")):
            count = sum(1 for _ in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
            shards.append({"name": tar.name, "count": count, "sha256": sha256_file(tar), "bytes": tar.stat().st_size})
        index = {
            "prefix": prefix,
            "num_samples": sum(s["count"] for s in shards),
            "num_skipped": len(skipped),
            "shards": shards,
            "provenance": provenance("shards", method),
        }
        write_json(tmp / "index.json", index)
        write_json(tmp / "report.json", {"skipped": skipped})
    return index


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


def _bad_shard(exn: Exception) -> bool:
    """webdataset error handler: a truncated or corrupt tar becomes a DataError naming the shard."""
    url = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "<shard>")
    raise DataError(url, f"corrupt or truncated shard ({type(exn).__name__}: {exn.args[0] if exn.args else exn})")


class TrainStream(IterableDataset):
    """Batches of two views, streamed from shards (use with ``DataLoader(batch_size=None)``).

    Each epoch the shard list is shuffled with seed (seed, epoch) and dealt round-robin to
    the ``world_size * num_workers`` readers; each reader shuffles its samples in a
    buffer seeded by (seed, epoch, slot) and seeds torch before each sample's views with
    (seed, epoch, key), so batches depend only on the seed and the epoch. Every reader
    yields the same number of batches (``batches_per_reader``), so the DataLoader's
    round-robin over workers is fixed and a resumed epoch can skip batches without
    decoding them (``skip_batches``).

    Yields:
        (v1, v2, box1, box2): (b, 3, S, S), (b, 3, S, S), (b, 4), (b, 4) with b the
        per-rank batch size.
    Raises:
        DataError: fewer shards than readers, or fewer samples than one batch per reader.
    """

    def __init__(
        self,
        shard_dir: Path,
        views: TwoViews,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
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
        batch: list[tuple[torch.Tensor, ...]] = []
        for n, sample in enumerate(samples):
            if n >= self.batches_per_reader * self.batch_size:
                break
            if n < skip * self.batch_size:
                continue  # resumed epoch: already trained on, not decoded
            data = sample.get("jpg", sample.get("png"))
            image = torch.from_numpy(decode_image(data, f"{sample.get('__url__')}:{sample['__key__']}")).permute(2, 0, 1)
            torch.manual_seed(_seed(self.seed, self.epoch, sample["__key__"]))
            batch.append(self.views(image))
            if len(batch) == self.batch_size:
                yield tuple(torch.stack(x) for x in zip(*batch))
                batch = []
