"""The demo generator: deterministic, DAVIS-layout, moving and occluding objects, atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hvc.data.demo as demo
from hvc.io import DataError, read_image, read_json, read_mask
from hvc.config.params import DemoParams

SMALL = DemoParams(
    seed=0, num_sequences=3, num_frames=8, height=64, width=96, max_objects=3, train_size=48, train_copies=2
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, demo.build_demo(SMALL, out)


def test_same_seed_gives_identical_bytes(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    demo.build_demo(SMALL, again)
    first, second = _files(out), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) > 50
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_different_seed_gives_different_data(built, tmp_path):
    out, _ = built
    other = tmp_path / "other"
    demo.build_demo(SMALL.model_copy(update={"seed": 1}), other)
    first, second = _files(out), _files(other)
    shared = sorted(set(first) & set(second))
    assert "train/000000.jpg" in shared
    assert first["train/000000.jpg"] != second["train/000000.jpg"]
    frames = [n for n in shared if n.startswith("benchmark/JPEGImages")]
    assert frames and all(first[n] != second[n] for n in frames)


def test_davis_layout(built):
    out, manifest = built
    bench = out / "benchmark"
    names = (bench / "ImageSets" / "2017" / "val.txt").read_text().splitlines()
    assert names == [f"demo-{i:02d}" for i in range(SMALL.num_sequences)]
    assert sorted(p.name for p in (bench / "JPEGImages" / "480p").iterdir()) == names
    assert sorted(p.name for p in (bench / "Annotations" / "480p").iterdir()) == names
    assert read_json(out / "manifest.json") == manifest
    entries = {s["name"]: s for s in manifest["benchmark"]["sequences"]}
    assert sorted(entries) == names
    for name in names:
        frames = sorted((bench / "JPEGImages" / "480p" / name).iterdir())
        masks = sorted((bench / "Annotations" / "480p" / name).iterdir())
        expected = [f"{t:05d}" for t in range(SMALL.num_frames)]
        assert [p.stem for p in frames] == expected and all(p.suffix == ".jpg" for p in frames)
        assert [p.stem for p in masks] == expected and all(p.suffix == ".png" for p in masks)
        n = entries[name]["num_objects"]
        assert 1 <= n <= SMALL.max_objects
        assert entries[name]["num_frames"] == SMALL.num_frames
        for t, (frame_path, mask_path) in enumerate(zip(frames, masks)):
            with Image.open(mask_path) as im:
                assert im.mode == "P"
            labels = read_mask(mask_path)
            assert read_image(frame_path).shape == (SMALL.height, SMALL.width, 3)
            assert labels.shape == (SMALL.height, SMALL.width)
            present = set(np.unique(labels).tolist())
            assert present <= set(range(n + 1))
            if t == 0:
                assert present >= set(range(1, n + 1)), f"{name}: an object is missing in frame 0"


def test_training_set(built):
    out, manifest = built
    images = sorted((out / "train").iterdir())
    expected = len(demo.TRAIN_PHOTOS) * SMALL.train_copies
    assert [p.name for p in images] == [f"{i:06d}.jpg" for i in range(expected)]
    assert manifest["train"]["num_images"] == expected
    for path in images:
        assert min(read_image(path).shape[:2]) == SMALL.train_size
    roles = {s["name"]: s["role"] for s in manifest["sources"]}
    assert {n for n, r in roles.items() if r == "train"} == set(demo.TRAIN_PHOTOS)
    assert {n for n, r in roles.items() if r == "benchmark"} == set(demo.BENCHMARK_PHOTOS)
    assert not set(demo.TRAIN_PHOTOS) & set(demo.BENCHMARK_PHOTOS)
    used = {s["background"] for s in manifest["benchmark"]["sequences"]}
    used |= {o["photo"] for s in manifest["benchmark"]["sequences"] for o in s["objects"]}
    assert used <= set(demo.BENCHMARK_PHOTOS)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def test_objects_move(built):
    out, manifest = built
    masks = out / "benchmark" / "Annotations" / "480p"
    moves = []
    for seq in manifest["benchmark"]["sequences"]:
        first = read_mask(masks / seq["name"] / "00000.png")
        last = read_mask(masks / seq["name"] / f"{SMALL.num_frames - 1:05d}.png")
        for k in range(1, seq["num_objects"] + 1):
            if (first == k).any() and (last == k).any():
                moves.append(np.linalg.norm(_centroid(last == k) - _centroid(first == k)))
    assert moves and max(moves) > 4.0


def _scene(params: DemoParams, index: int) -> demo.DemoScene:
    """Re-draw sequence ``index`` of a build exactly as build_demo does."""
    rng = np.random.default_rng([params.seed, demo._SEQUENCE_STREAM, index])
    return demo.sample_scene(params, {n: demo.load_photo(n) for n in demo.BENCHMARK_PHOTOS}, rng)


def test_objects_occlude_each_other(built):
    out, manifest = built
    sequences = manifest["benchmark"]["sequences"]
    for s in sequences:
        assert sorted(o["depth"] for o in s["objects"]) == list(range(s["num_objects"]))
    occluded = [i for i, s in enumerate(sequences) if sum(o["occluded_frames"] for o in s["objects"]) > 0]
    assert occluded, "the test seed should give a sequence with occlusions"
    # Independently: two objects' full masks overlap in some frame, and the written mask
    # gives the overlap to the nearer one.
    index = occluded[0]
    scene = _scene(SMALL, index)
    grid = demo._frame_grid(scene.frame_shape)
    overlaps = 0
    for t in range(SMALL.num_frames):
        written = read_mask(out / "benchmark/Annotations/480p" / sequences[index]["name"] / f"{t:05d}.png")
        layers = demo._frame_layers(scene, t, grid, pixels=False)  # farthest first
        for i, (_, far_mask, _) in enumerate(layers):
            for _, near_mask, _ in layers[i + 1 :]:
                both = far_mask & near_mask
                overlaps += int(both.sum())
                hidden_by_nearer = np.isin(written[both], [lab for lab, _, _ in layers[i + 1 :]])
                assert hidden_by_nearer.all()
    assert overlaps > 0


def test_composite_paints_and_labels_back_to_front():
    background = np.zeros((4, 5, 3), dtype=np.uint8)
    far = np.zeros((4, 5), dtype=bool)
    far[0:3, 0:3] = True
    near = np.zeros((4, 5), dtype=bool)
    near[1:4, 2:5] = True
    layers = [
        (2, far, np.full((far.sum(), 3), 10, dtype=np.uint8)),
        (1, near, np.full((near.sum(), 3), 200, dtype=np.uint8)),
    ]
    frame, labels = demo.composite(background, layers)
    expected = np.array(
        [
            [2, 2, 2, 0, 0],
            [2, 2, 1, 1, 1],
            [2, 2, 1, 1, 1],
            [0, 0, 1, 1, 1],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(frame[..., 0], np.choose(expected, [0, 200, 10]))
    assert labels.dtype == np.uint8 and frame.dtype == np.uint8
    assert not background.any(), "the background must not be modified"
    # label map only
    _, labels_only = demo.composite(background, [(label, mask, None) for label, mask, _ in layers])
    np.testing.assert_array_equal(labels_only, expected)


def test_masks_are_the_painted_pixels(built):
    """Frame pixels inside a mask come from the object, not the background: re-render
    one frame's layers and check each object's mask is exactly where its colours went."""
    scene = _scene(SMALL, 0)
    grid = demo._frame_grid(scene.frame_shape)
    layers = demo._frame_layers(scene, 0, grid, pixels=True)
    background = np.full((*scene.frame_shape, 3), -1.0)
    frame, labels = demo.composite(background, layers)
    assert ((labels == 0) == (frame[..., 0] == -1)).all()
    out, _ = built
    np.testing.assert_array_equal(labels, read_mask(out / "benchmark/Annotations/480p/demo-00/00000.png"))


def test_failure_mid_build_leaves_no_output(tmp_path, monkeypatch):
    calls = 0

    def failing_write_mask(path, labels):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(demo, "write_mask", failing_write_mask)
    out = tmp_path / "demo"
    with pytest.raises(OSError, match="simulated"):
        demo.build_demo(SMALL, out)
    assert calls == 5
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_build(built, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    demo.build_demo(SMALL, out)
    before = _files(out)
    monkeypatch.setattr(demo, "write_mask", lambda path, labels: (_ for _ in ()).throw(OSError("simulated")))
    with pytest.raises(OSError):
        demo.build_demo(SMALL.model_copy(update={"seed": 9}), out)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_missing_bundled_photo_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setitem(demo.PHOTO_FILES, "rocket", "no_such_rocket.jpg")
    out = tmp_path / "demo"
    with pytest.raises(DataError, match="no_such_rocket.jpg"):
        demo.build_demo(SMALL, out)
    assert not out.exists()
