"""Properties of hvc.io: masks round-trip exactly; atomic outputs are all-or-nothing.

- Every label map (H, W up to 64, labels 0..255) written as a palette PNG reads back
  identical. (``read_mask`` turns a *greyscale* 0/255 image into labels {0, 1}, the DAVIS
  2016 convention; the pipeline writes palette PNGs only, so its own masks never meet that
  rule, including maps made of 0 and 255 alone.)
- ``atomic_path`` / ``atomic_dir`` leave the previous content (or its absence) untouched
  when the body raises, whatever it wrote before raising, and leave no temporary file.
- ``DataError`` keeps its path and problem through pickling and through torch's
  DataLoader, which re-raises a worker's exception from its traceback text.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from hvc.io import (
    DataError,
    atomic_dir,
    atomic_path,
    davis_palette,
    encode_mask,
    read_mask,
    remove_stale_temporaries,
    write_mask,
)

SETTINGS = settings(max_examples=60, deadline=None)

shapes = st.tuples(st.integers(1, 64), st.integers(1, 64))


@st.composite
def label_maps(draw) -> np.ndarray:
    """(H, W) uint8 maps: any labels, or few labels in blobs (like real masks), or 0/255 only."""
    shape = draw(shapes)
    kind = draw(st.sampled_from(["any", "few", "davis2016_values"]))
    if kind == "any":
        return draw(arrays(np.uint8, shape, elements=st.integers(0, 255)))
    values = [0, 255] if kind == "davis2016_values" else draw(st.lists(st.integers(0, 255), min_size=1, max_size=4))
    index = draw(arrays(np.uint8, shape, elements=st.integers(0, len(values) - 1)))
    return np.asarray(values, np.uint8)[index]


# --------------------------------------------------------------------------- masks


@SETTINGS
@given(labels=label_maps())
@example(labels=np.array([[0, 255], [255, 0]], np.uint8))  # a DAVIS 2016 greyscale mask would read as {0, 1}
@example(labels=np.zeros((1, 1), np.uint8))
@example(labels=np.full((64, 64), 255, np.uint8))
@example(labels=np.arange(256, dtype=np.uint8).reshape(16, 16))
def test_palette_png_round_trip_is_lossless(labels):
    data = encode_mask(labels)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P"  # never greyscale: read_mask's 0/255 rule cannot apply
        assert list(im.getpalette()[:768]) == list(davis_palette())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mask.png"
        write_mask(path, labels)
        assert path.read_bytes() == data
        back = read_mask(path)
    assert back.dtype == np.uint8 and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)


@SETTINGS
@given(labels=arrays(np.int64, shapes, elements=st.integers(-3, 300)))
def test_encode_mask_refuses_labels_outside_0_255(labels):
    if labels.min() >= 0 and labels.max() <= 255:
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_mask(labels)))), labels)
    else:
        with pytest.raises(ValueError, match=r"\[0, 255\]"):
            encode_mask(labels)


def test_greyscale_0_255_masks_read_as_davis2016_labels(tmp_path):
    """The one lossy rule, for reading DAVIS 2016 ground truth, applies to greyscale only."""
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), grey // 255)
    write_mask(tmp_path / "b.png", grey)
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), grey)


# --------------------------------------------------------------------------- atomic outputs


class Boom(Exception):
    pass


# What interrupts the body: an error, Ctrl-C, sys.exit (all BaseException).
interruptions = st.sampled_from([Boom, KeyboardInterrupt, SystemExit])
blobs = st.binary(max_size=2048)
file_names = st.text("abcdefghij_0123456789", min_size=1, max_size=8)
trees = st.dictionaries(file_names, blobs, max_size=5)


def _leftovers(folder: Path, target: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != target)


@SETTINGS
@given(old=st.none() | blobs, partial=blobs, exc=interruptions)
def test_atomic_path_keeps_the_previous_file_when_the_body_raises(old, partial, exc):
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "out.bin"
        if old is not None:
            target.write_bytes(old)
        with pytest.raises(exc), atomic_path(target) as tmp:
            tmp.write_bytes(partial)  # half-written content
            raise exc()
        if old is None:
            assert not target.exists()
        else:
            assert target.read_bytes() == old
        assert _leftovers(Path(d), "out.bin") == []


@SETTINGS
@given(old=st.none() | blobs, new=blobs)
def test_atomic_path_replaces_the_file_when_the_body_succeeds(old, new):
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "sub" / "out.bin"
        if old is not None:
            target.parent.mkdir()
            target.write_bytes(old)
        with atomic_path(target) as tmp:
            assert not target.exists() or target.read_bytes() == old  # untouched until the end
            tmp.write_bytes(new)
        assert target.read_bytes() == new
        assert _leftovers(target.parent, "out.bin") == []


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_tree(folder: Path, tree: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in tree.items():
        (folder / name).write_bytes(data)


@SETTINGS
@given(old=st.none() | trees, partial=trees, exc=interruptions)
def test_atomic_dir_keeps_the_previous_folder_when_the_body_raises(old, partial, exc):
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "out"
        if old is not None:
            _write_tree(target, old)
        with pytest.raises(exc), atomic_dir(target) as tmp:
            _write_tree(tmp, partial)
            raise exc()
        if old is None:
            assert not target.exists()
        else:
            assert _tree(target) == old
        assert _leftovers(Path(d), "out") == []


@SETTINGS
@given(old=st.none() | trees, new=trees)
def test_atomic_dir_replaces_the_whole_folder_when_the_body_succeeds(old, new):
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "out"
        if old is not None:
            _write_tree(target, old)
        with atomic_dir(target) as tmp:
            _write_tree(tmp, new)
            assert old is None or _tree(target) == old  # untouched until the end
        assert _tree(target) == new  # nothing of the old folder survives
        assert _leftovers(Path(d), "out") == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("context", [atomic_dir, atomic_path])
def test_temporaries_of_killed_processes_are_removed_by_the_next_write(tmp_path, context):
    """SIGKILL leaves a half-written temporary beside the target; the next write removes it,
    but never one of a live process or of another host on a shared filesystem."""
    host, dead, alive = socket.gethostname(), _dead_pid(), os.getpid()
    stale_dir = tmp_path / f".out.{dead}@{host}.k3j_x9.tmp"
    stale_file = tmp_path / f".out.{dead}@{host}.a8f2.tmp"
    stale_old = tmp_path / f".out.{dead}@{host}.old.tmp"
    stale_other = tmp_path / f".out.json.{dead}@{host}.q2.tmp"  # another target's, same dead process
    kept = [
        tmp_path / f".out.{alive}@{host}.zz1.tmp",  # a live process (this one)
        tmp_path / f".out.{dead}@other-{host}.q1.tmp",  # another host
        tmp_path / f".out.{dead}@{host}.tmp",  # not a name atomic_* makes
        tmp_path / ".out.notes.tmp",
        tmp_path / "out.tmp",
    ]
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "sub" / "half.bin").write_bytes(b"x" * 100)
    for path in [stale_file, stale_old, stale_other, *kept]:
        path.write_bytes(b"x")
    with context(tmp_path / "out") as tmp:
        if context is atomic_dir:
            (tmp / "done").write_text("ok")
        else:
            tmp.write_text("ok")
    assert not any(p.exists() for p in (stale_dir, stale_file, stale_old, stale_other))
    assert all(p.exists() for p in kept)
    assert remove_stale_temporaries(tmp_path) == []


# --------------------------------------------------------------------------- DataError across processes


@SETTINGS
@given(
    path=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), min_size=1).filter(
        lambda s: ": " not in s and s.strip() == s
    ),
    problem=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), min_size=1).filter(
        lambda s: s.strip() == s
    ),
)
def test_data_error_survives_pickling(path, problem):
    e = pickle.loads(pickle.dumps(DataError(path, problem)))
    assert type(e) is DataError and (e.path, e.problem) == (path, problem)


def test_data_error_rebuilt_from_a_loader_workers_traceback():
    """torch's DataLoader re-raises a worker's exception as ``type(msg)`` with the traceback text."""
    from torch._utils import ExceptionWrapper

    try:
        raise DataError("/data/shards/demo-train-000003.tar:train__000123", "not a readable image")
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataError) as e:
        wrapped.reraise()
    assert e.value.path == "/data/shards/demo-train-000003.tar:train__000123"
    assert e.value.problem == "not a readable image"
