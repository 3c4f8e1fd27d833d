"""The method seam: registry, encoder spec, video shards and the clip stream, demo training
videos, and a toy clip method trained by the generic loop."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import hvc.data.demo as demo
import hvc.eval.encoders as encoders
import hvc.train as train_module
from hvc.config import code
from hvc.config.ids import stage_ids, stage_reads, train_config
from hvc.config.params import DemoParams, Params
from hvc.config.registry import method_names
from hvc.data.shards import TrainStream, list_training_videos, write_shards, write_training_shards, write_video_shards
from hvc.io import DataError, read_json
from hvc.methods import batch_kind, get_method
from hvc.inputs import normalize_input
from hvc.methods.base import ClipCrop, DataSpec, EncoderSpec, Method
from hvc.methods.hvc.method import HVCMethod

# ---------------------------------------------------------------------------------- registry


def test_registry_loads_hvc_by_name_and_rejects_unknown_names():
    assert get_method("hvc") is HVCMethod
    assert batch_kind("hvc") == "views"
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        get_method("nope")
    allowed = typing.get_args(Params.model_fields["method"].annotation)
    assert sorted(allowed) == sorted(method_names())


def test_only_the_trained_method_enters_the_model_code():
    files = {p.relative_to(code.PACKAGE_DIR).as_posix() for p in code.stage_files("train", "hvc")}
    assert {"methods/base.py", "methods/__init__.py", "methods/hvc/method.py", "methods/hvc/loss.py"} <= files
    other = {p.relative_to(code.PACKAGE_DIR).as_posix() for p in code.stage_files("train", "liir")}
    assert not any(f.startswith("methods/hvc/") for f in other)
    assert "train.py" in other and "methods/base.py" in other


def test_hvc_ids_of_data_and_shards_do_not_see_the_video_settings():
    p = Params()
    assert not any("train_video" in k for k in stage_reads("demo_data", p).values(p))
    changed = p.model_copy(update={"demo": p.demo.model_copy(update={"train_videos": 3})})
    assert stage_ids(changed) == stage_ids(p)
    assert train_config(p)["params"]["method"] == "hvc"
    # a compared method trained on clips: one demo, with training videos, for every method
    compared = p.model_copy(update={"compare": ["liir"]})
    assert any("train_video" in k for k in stage_reads("demo_data", compared).values(compared))


def test_encoder_spec_round_trip_and_checks():
    spec = EncoderSpec("liir", "lab", "lab", 4, ("post",), "post")
    assert EncoderSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="does not fit colour space"):
        EncoderSpec("x", "imagenet", "lab")
    with pytest.raises(ValueError, match="unknown encoder spec keys"):
        EncoderSpec.from_dict({"method": "x", "size": 3})
    white = normalize_input(torch.full((3, 2, 2), 255, dtype=torch.uint8), "lab")
    assert white[:, 0, 0] == pytest.approx([1.0, 0.0, 0.0], abs=1e-3)  # L = 100, a = b = 0
    assert HVCMethod.build(Params()).encoder_spec().normalization == "imagenet"


def test_clip_crop_applies_one_transform_to_every_frame():
    clip = torch.arange(2 * 3 * 20 * 30, dtype=torch.float32).view(2, 3, 20, 30).remainder(251).to(torch.uint8)
    clip[1] = clip[0]
    torch.manual_seed(0)
    out = ClipCrop(8, scale=(0.2, 0.6), flip=True, keep_rgb=True)(clip)
    assert out["frames"].shape == (2, 3, 8, 8) and torch.equal(out["frames"][0], out["frames"][1])
    whole = ClipCrop(8)(clip)["frames"]
    assert whole.shape == (2, 3, 8, 8) and not torch.equal(whole[0], out["frames"][0])


# ---------------------------------------------------------------------------------- video shards


def _videos(root: Path, lengths=(9, 10, 11, 12, 13, 14)) -> list[tuple[str, list[Path]]]:
    """Videos whose frame i of video v is a uniform PNG of colour (20 v, 15 i, 7): the clip
    stream's picks can be read back from the pixels."""
    out = []
    for v, n in enumerate(lengths):
        folder = root / "train_videos" / f"vid{v}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((12, 16, 3), (20 * v, 15 * i, 7), np.uint8)).save(folder / f"{i:05d}.png")
        out.append((f"vid{v}", sorted(folder.iterdir())))
    return out


class Identity:
    """Clip transform that keeps the uint8 frames (picklable)."""

    def __call__(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"frames": clip}


@pytest.fixture(scope="module")
def video_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    index = write_video_shards(_videos(root), root / "shards", "demo-train", max_count=2)
    assert index["unit"] == "video" and index["num_samples"] == 6
    assert [s["min_frames"] for s in index["shards"]] == [9, 11, 13]
    return root / "shards"


def _clip_indices(frames: torch.Tensor) -> list[tuple[int, list[int]]]:
    """(video, frame indices) of each clip of a (B, T, 3, H, W) uint8 batch."""
    return [(round(c[0, 0, 0, 0].item() / 20), [round(f[1, 0, 0].item() / 15) for f in c]) for c in frames]


def _stream(shards, seed=0, **kw) -> TrainStream:
    return TrainStream(shards, Identity(), 2, seed=seed, kind="clips", clip_length=3, frame_gap=4, **kw)


def _epoch(stream: TrainStream, epoch: int, skip: int = 0) -> list[list[tuple[int, list[int]]]]:
    stream.set_epoch(epoch, skip_batches=skip)
    return [_clip_indices(b["frames"]) for b in stream]


def test_clip_stream_yields_clips_of_t_frames_with_the_gap(video_shards):
    stream = _stream(video_shards)
    batch = next(iter(stream))
    assert batch["frames"].shape == (2, 3, 3, 12, 16) and batch["frames"].dtype == torch.uint8
    seen = [clip for b in _epoch(stream, 0) for clip in b]
    assert len(seen) == len(stream) * 2 == 6
    assert sorted(v for v, _ in seen) == list(range(6))  # one clip per video and epoch
    for _, idx in seen:
        assert np.diff(idx).tolist() == [4, 4]


def test_clip_stream_is_deterministic_per_seed_and_epoch_and_resumable(video_shards):
    a, b = _epoch(_stream(video_shards), 1), _epoch(_stream(video_shards), 1)
    assert a == b
    starts = {e: [clip[1][0] for batch in _epoch(_stream(video_shards), e) for clip in batch] for e in range(4)}
    assert len({tuple(s) for s in starts.values()}) > 1  # another epoch, other clips
    assert _epoch(_stream(video_shards, seed=1), 1) != a
    resumed = _epoch(_stream(video_shards), 1, skip=1)
    assert resumed == a[1:]


def test_clip_stream_rejects_image_shards_and_short_videos(video_shards, tmp_path):
    with pytest.raises(DataError, match="fewer than one clip"):
        TrainStream(video_shards, Identity(), 2, kind="clips", clip_length=3, frame_gap=5)  # spans 11 > 9
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    write_shards([img], tmp_path, tmp_path / "images", "x")
    with pytest.raises(DataError, match="holds image shards but the method trains on clips"):
        TrainStream(tmp_path / "images", Identity(), 1, kind="clips", clip_length=2)


def test_a_views_phase_reads_one_frame_of_each_video_from_video_shards(video_shards):
    """A method whose phases read images, then clips, trains from one set of video shards:
    a views phase gets one frame per video and epoch, drawn after seeding."""
    stream = TrainStream(video_shards, Identity(), 1, seed=3)  # kind views
    picks = {}
    for epoch in (0, 1, 2):
        stream.set_epoch(epoch)
        for batch in stream:
            image = batch["frames"][0]
            assert image.shape == (3, 12, 16) and image[2].eq(7).all()
            video, frame = round(image[0, 0, 0].item() / 20), round(image[1, 0, 0].item() / 15)
            picks.setdefault(video, set()).add(frame)
    assert set(picks) == set(range(6)) and any(len(f) > 1 for f in picks.values())
    again = TrainStream(video_shards, Identity(), 1, seed=3)
    again.set_epoch(0)
    stream.set_epoch(0)
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(again, stream))


# ---------------------------------------------------------------------------------- demo training videos

SMALL = DemoParams(
    seed=0, num_sequences=2, num_frames=6, height=48, width=64, max_objects=2, train_size=48, train_copies=1,
    train_videos=3, train_video_frames=7,
)  # fmt: skip


@pytest.fixture(scope="module")
def demo_videos(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, demo.build_demo(SMALL, out, videos=True)


def test_demo_training_videos_exist_and_are_disjoint_from_the_benchmark(demo_videos, tmp_path):
    out, manifest = demo_videos
    videos = list_training_videos(out, "demo")
    assert [k for k, _ in videos] == ["train_videos__train-000", "train_videos__train-001", "train_videos__train-002"]
    assert all(len(frames) == 7 for _, frames in videos)
    used = {v["background"] for v in manifest["train_videos"]["videos"]}
    used |= {o for v in manifest["train_videos"]["videos"] for o in v["objects"]}
    assert used <= set(demo.TRAIN_PHOTOS) and not used & set(demo.BENCHMARK_PHOTOS)
    bench = {p.read_bytes() for p in (out / "benchmark" / "JPEGImages").rglob("*.jpg")}
    assert not bench & {f.read_bytes() for _, frames in videos for f in frames}
    first = np.asarray(Image.open(videos[0][1][0]), np.float32)
    last = np.asarray(Image.open(videos[0][1][-1]), np.float32)
    assert np.abs(first - last).mean() > 1.0  # the video moves
    # without videos (methods trained on images) the demo is what it was
    plain = demo.build_demo(SMALL, tmp_path / "plain")
    assert not (tmp_path / "plain" / "train_videos").exists() and "train_videos" not in plain
    assert "train_videos" not in plain["params"]


def test_real_davis_training_sequences_become_video_shards_and_clips(davis2016_sample, tmp_path):
    """Three DAVIS 2016 train sequences (every 4th frame) as training videos: clips of
    real frames, the gap counted in the stored frames."""
    listed = (davis2016_sample / "ImageSets" / "480p" / "train_frames.txt").read_text().split()
    names = sorted({line.split("/")[3] for line in listed})[:3]
    videos = []
    for name in names:
        frames = sorted((davis2016_sample / "JPEGImages" / "480p" / name).glob("*.jpg"))
        videos.append((name, frames))
    index = write_video_shards(videos, tmp_path / "shards", "davis2016-train", max_count=1)
    assert index["num_samples"] == 3 and min(s["min_frames"] for s in index["shards"]) >= 5
    stream = TrainStream(tmp_path / "shards", ClipCrop(64, scale=(0.3, 1.0)), 3, kind="clips", clip_length=3, frame_gap=2)
    batch = next(iter(stream))
    assert batch["frames"].shape == (3, 3, 3, 64, 64)
    assert batch["frames"][:, 0].sub(batch["frames"][:, 2]).abs().mean() > 0.01  # frames 4 stored frames apart differ
