"""Shards round-trip the original bytes; the training stream is reproducible and resumable."""


import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from hvc.io import DataError, read_json, sha256_file
from hvc.data.shards import TrainStream, list_training_images, write_shards
from hvc.methods.hvc.views import TwoViews


def make_images(folder, n, size=(40, 56)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        fmt, ext = ("PNG", "png") if i % 3 == 0 else ("JPEG", "jpg")
        Image.fromarray(arr).save(folder / f"{i:04d}.{ext}", format=fmt)
    return folder


def test_shards_round_trip_bytes_and_index(tmp_path):
    src = make_images(tmp_path / "src" / "train", 10)
    images = list_training_images(tmp_path / "src", "demo")
    index = write_shards(images, tmp_path / "src", tmp_path / "shards", "demo-train", max_count=4)
    assert index["num_samples"] == 10 and [s["count"] for s in index["shards"]] == [4, 4, 2]
    assert [s["name"] for s in index["shards"]] == [f"demo-train-{i:06d}.tar" for i in range(3)]
    for s in index["shards"]:
        assert s["sha256"] == sha256_file(tmp_path / "shards" / s["name"])
    seen = {}
    for s in index["shards"]:
        for sample in wds.WebDataset(str(tmp_path / "shards" / s["name"]), shardshuffle=False, empty_check=False):
            data = sample.get("jpg", sample.get("png"))
            seen[sample["__key__"]] = data
    assert len(seen) == 10
    for path in sorted(src.iterdir()):
        assert seen[f"train__{path.stem}"] == path.read_bytes()  # byte-identical, no re-encode


def test_shards_are_deterministic_and_step_keeps_every_sth(tmp_path):
    make_images(tmp_path / "src" / "train", 9)
    images = list_training_images(tmp_path / "src", "demo", step=4)
    assert [p.stem for p in images] == ["0000", "0004", "0008"]
    a = write_shards(images, tmp_path / "src", tmp_path / "a", "demo-train")
    b = write_shards(images, tmp_path / "src", tmp_path / "b", "demo-train")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_bad_image_fails_or_is_reported(tmp_path):
    src = make_images(tmp_path / "src" / "train", 4)
    (src / "0001.jpg").write_bytes((src / "0001.jpg").read_bytes()[:100])  # truncated JPEG
    images = list_training_images(tmp_path / "src", "demo")
    with pytest.raises(DataError, match="0001.jpg"):
        write_shards(images, tmp_path / "src", tmp_path / "out", "demo-train")
    assert not (tmp_path / "out").exists()  # nothing half-written
    index = write_shards(images, tmp_path / "src", tmp_path / "out", "demo-train", on_bad_image="skip")
    assert index["num_samples"] == 3 and index["num_skipped"] == 1
    report = read_json(tmp_path / "out" / "report.json")
    assert report["skipped"][0]["file"].endswith("0001.jpg")


def test_train_stream_is_reproducible_and_skips_exactly(tmp_path):
    make_images(tmp_path / "src" / "train", 24)
    images = list_training_images(tmp_path / "src", "demo")
    write_shards(images, tmp_path / "src", tmp_path / "shards", "demo-train", max_count=6)
    views = TwoViews(16)

    def batches(skip=0, epoch=0):
        stream = TrainStream(tmp_path / "shards", views, batch_size=4, seed=3)
        stream.set_epoch(epoch, skip)
        return list(stream)

    full = batches()
    assert len(full) == 6 and full[0][0].shape == (4, 3, 16, 16) and full[0][2].shape == (4, 4)
    again = batches()
    assert all(torch.equal(x, y) for a, b in zip(full, again) for x, y in zip(a, b))
    resumed = batches(skip=2)
    assert len(resumed) == 4
    assert all(torch.equal(x, y) for a, b in zip(full[2:], resumed) for x, y in zip(a, b))
    other_epoch = batches(epoch=1)
    assert not torch.equal(full[0][0], other_epoch[0][0])


def test_too_few_shards_for_the_readers_is_a_clear_error(tmp_path):
    make_images(tmp_path / "src" / "train", 4)
    images = list_training_images(tmp_path / "src", "demo")
    write_shards(images, tmp_path / "src", tmp_path / "shards", "demo-train")
    with pytest.raises(DataError, match="shard"):
        TrainStream(tmp_path / "shards", TwoViews(16), batch_size=2, world_size=2, num_workers=2)


def test_views_record_their_crop_boxes():
    torch.manual_seed(0)
    image = torch.arange(3 * 50 * 80, dtype=torch.float32).reshape(3, 50, 80).to(torch.uint8)
    v1, v2, b1, b2 = TwoViews(24, scale=(0.2, 0.5))(image)
    assert v1.shape == (3, 24, 24)
    for b in (b1, b2):
        assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1


def test_training_sets_point_into_the_dataset_registry():
    from hvc.data.download import load_registry
    from hvc.config.datasets import TRAIN_SET_DATASETS, TRAIN_SET_GLOBS

    registry = load_registry()
    datasets = registry if isinstance(registry, dict) else registry.datasets
    for train_set, name in TRAIN_SET_DATASETS.items():
        entry = datasets[name]
        layout = entry["layout"] if isinstance(entry, dict) else entry.layout
        assert TRAIN_SET_GLOBS[train_set].startswith(f"{name}/{layout[0]}/"), train_set


def test_benchmarks_point_into_the_dataset_registry():
    from hvc.config.benchmarks import BENCHMARKS
    from hvc.config.params import BENCHMARKS as PARAM_BENCHMARKS
    from hvc.data.download import load_registry

    registry = load_registry()
    datasets = registry if isinstance(registry, dict) else registry.datasets
    assert set(BENCHMARKS) == set(PARAM_BENCHMARKS)  # params accept exactly the benchmarks with a reader
    for name, bench in BENCHMARKS.items():
        if name == "demo":
            continue
        dataset, _, inner = bench.folder.partition("/")
        entry = datasets[dataset]
        layout = entry["layout"] if isinstance(entry, dict) else entry.layout
        assert not inner or any(item.startswith(inner + "/") for item in layout), name
