"""Reading training samples: webdataset shards vs the same JPEGs in a folder.

Builds (or takes) a folder of JPEGs, writes them to shards with hvc.data.shards.write_shards,
then times decoding every image both ways through a torch DataLoader with N workers,
and prints images/s for each.

    python benchmarks/shard_read_speed.py --images 2000 --workers 0 2
    python benchmarks/shard_read_speed.py --folder data/coco2017_train/train2017 --limit 5000 --workers 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from hvc.io import decode_image
from hvc.data.shards import write_shards


class FolderImages(Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> int:
        return decode_image(self.files[i].read_bytes(), self.files[i]).shape[0]


class ShardImages(IterableDataset):
    def __init__(self, shards: list[str]) -> None:
        self.shards = shards

    def __iter__(self):
        info = get_worker_info()
        mine = self.shards[info.id :: info.num_workers] if info else self.shards
        for sample in wds.WebDataset(mine, shardshuffle=False, empty_check=False, workersplitter=None, nodesplitter=None):
            yield decode_image(sample["jpg"], sample["__key__"]).shape[0]


def rate(dataset, workers: int, n: int) -> float:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    tic = time.perf_counter()
    count = sum(1 for _ in loader)
    assert count == n, (count, n)
    return n / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, help="folder of JPEGs (default: generate --images of 480x640)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--shard-count", type=int, default=100, help="images per shard")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.folder is None:
            args.folder = tmp / "jpg"
            args.folder.mkdir()
            rng = np.random.default_rng(0)
            for i in range(args.images):
                small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(args.folder / f"{i:06d}.jpg", quality=90)
        files = sorted(args.folder.glob("*.jpg"))[: args.limit]
        index = write_shards(files, args.folder, tmp / "shards", "bench-train", max_count=args.shard_count)
        shards = [str(tmp / "shards" / s["name"]) for s in index["shards"]]
        print(f"{len(files)} JPEGs, {len(shards)} shards")
        for w in args.workers:
            folder = rate(FolderImages(files), w, len(files))
            shard = rate(ShardImages(shards), w, len(files))
            print(f"workers {w}: folder {folder:.0f} images/s, shards {shard:.0f} images/s")


if __name__ == "__main__":
    main()
