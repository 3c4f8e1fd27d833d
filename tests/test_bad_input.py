"""Every bad input stops its stage in seconds with one clear line, a non-zero exit, no output.

Researchers run this pipeline for days; a typo or a corrupt file must not cost a day. Each
test here damages one input of a working tiny setting and runs the real entry point (the
``hvc`` CLI in-process through typer's CliRunner, a subprocess for the end-to-end checks,
or the module's API where there is no CLI: archive extraction, the training stream, the
YouTube-VOS reader), then asserts:

- the exit code is 2, the CLI's code for bad input (not 1 with a traceback);
- the one error line names the bad file (and the member, key or label involved);
- the ``--out`` path does not exist afterwards (nothing half-written).

An input that can be skipped safely (one unreadable image among thousands of training
images, ``shards.on_bad_image: skip``) is skipped and listed in ``report.json``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

import hvc.eval.predict
from hvc.eval.readers import read_ytvos
from hvc.cli import app
from hvc.data.download import fetch
from hvc.data.extract import extract_archives
from hvc.io import DataError, read_json, sha256_file, write_json, write_mask
from hvc.data.shards import TrainStream
from hvc.methods.hvc.views import TwoViews

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILES = [ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]
PARAMS = [a for f in PARAMS_FILES for a in ("--params", str(f))]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def train_src(demo_dir, tmp_path) -> Path:
    """A private copy of the demo training set (``<src>/train/*.jpg``) to damage."""
    shutil.copytree(demo_dir / "train", tmp_path / "src" / "train")
    return tmp_path / "src"


@pytest.fixture
def no_propagation(monkeypatch):
    """Fail the test if propagation starts: bad input must be found before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("propagation started before the inputs were checked")

    monkeypatch.setattr(hvc.eval.predict, "propagate_video", refuse)


def hvc_cli(caplog, *args) -> tuple[int, str, list[str]]:
    """Run ``hvc ARGS`` in-process; (exit code, output, error log lines)."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"hvc {' '.join(map(str, args))} leaked {result.exception!r}") from result.exception
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return result.exit_code, result.output, errors


def assert_fails(caplog, args, *names, out: Path, problem: str | None = None) -> str:
    """``hvc ARGS`` exits 2 with one error line naming ``names`` (and ``problem``); no ``out``."""
    code, output, errors = hvc_cli(caplog, *args)
    assert code == 2, f"exit code {code}, expected 2 (bad input)\n{output}\n{errors}"
    assert len(errors) == 1, errors
    message = errors[0]
    for name in names:
        assert str(name) in message, f"{name} not named in: {message}"
    if problem is not None:
        assert problem in message, f"{problem!r} not in: {message}"
    assert "Traceback" not in message and "Traceback" not in output
    assert not Path(out).exists(), f"{out} was written"
    return message


def propagate_args(bench: Path, out: Path, encoder: str | Path = "random") -> list:
    return ["propagate", *PARAMS, "--encoder", encoder, "--benchmark", "demo", "--data", bench, "--out", out]


def jpeg_bytes(size=(96, 64), seed=0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


# How each image is damaged, and the problem the message must state.
DAMAGE = {
    "truncated_jpeg": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "corrupt or truncated"),
    "not_an_image": (lambda p: p.write_text("<html><body>404 Not Found</body></html>\n"), "not a readable image"),
    "zero_bytes": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
}


# --------------------------------------------------------------------------- training images (hvc shards)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_shards_refuse_a_bad_training_image(caplog, tmp_path, train_src, damage):
    bad = train_src / "train" / "000005.jpg"
    harm, problem = DAMAGE[damage]
    harm(bad)
    out = tmp_path / "shards"
    args = ["shards", *PARAMS, "--input", train_src, "--out", out]
    assert_fails(caplog, args, bad, out=out, problem=problem)


def test_shards_skip_lists_the_bad_image_in_the_report(caplog, tmp_path, train_src):
    bad = train_src / "train" / "000005.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    out = tmp_path / "shards"
    code, output, errors = hvc_cli(
        caplog, "shards", *PARAMS, "--set", "shards.on_bad_image=skip", "--input", train_src, "--out", out
    )
    assert code == 0, (output, errors)
    report, index = read_json(out / "report.json"), read_json(out / "index.json")
    assert [s["file"] for s in report["skipped"]] == [str(bad)]
    assert "truncated" in report["skipped"][0]["error"]
    assert index["num_skipped"] == 1 and index["num_samples"] == 23
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad) in w for w in warnings), warnings  # said at the time, not only in the report
    assert any("(1 skipped)" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- benchmark frames and masks (hvc propagate)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_propagate_refuses_a_bad_frame_before_any_work(caplog, tmp_path, bench, no_propagation, damage):
    bad = bench / "JPEGImages/480p/demo-01/00005.jpg"  # the last frame of the last video
    harm, problem = DAMAGE[damage]
    harm(bad)
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), bad, out=out, problem=problem)


def _write_rgb(path: Path) -> None:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    Image.fromarray(rgb).save(path)
    assert Image.open(path).mode == "RGB"


def test_propagate_refuses_an_rgb_first_frame_mask(caplog, tmp_path, bench, no_propagation):
    bad = bench / "Annotations/480p/demo-01/00000.png"
    _write_rgb(bad)
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), bad, out=out, problem="mode 'RGB'")


def test_propagate_refuses_an_empty_first_frame_mask(caplog, tmp_path, bench, no_propagation):
    bad = bench / "Annotations/480p/demo-01/00000.png"
    write_mask(bad, np.zeros((64, 96), np.uint8))
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), bad, out=out, problem="empty")


def test_propagate_refuses_a_missing_first_frame_mask(caplog, tmp_path, bench, no_propagation):
    missing = bench / "Annotations/480p/demo-01/00000.png"
    missing.unlink()
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), missing, out=out, problem="not found")


def test_propagate_refuses_a_frame_of_another_size(caplog, tmp_path, bench, no_propagation):
    bad = bench / "JPEGImages/480p/demo-01/00003.jpg"
    bad.write_bytes(jpeg_bytes(size=(80, 60)))
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out), bad, out=out)
    assert "80x60" in message and "96x64" in message


def test_propagate_refuses_a_mask_without_its_frame(caplog, tmp_path, bench, no_propagation):
    (bench / "JPEGImages/480p/demo-01/00002.jpg").unlink()
    orphan = bench / "Annotations/480p/demo-01/00002.png"
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), orphan, "00002.jpg", out=out, problem="has no frame")


def test_propagate_refuses_a_sequence_of_one_frame(caplog, tmp_path, bench, no_propagation):
    for i in range(1, 6):
        (bench / f"JPEGImages/480p/demo-01/{i:05d}.jpg").unlink()
        (bench / f"Annotations/480p/demo-01/{i:05d}.png").unlink()
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), bench / "JPEGImages/480p/demo-01", out=out, problem="1 frame(s)")


def test_propagate_refuses_an_image_set_naming_a_missing_sequence(caplog, tmp_path, bench, no_propagation):
    split = bench / "ImageSets/2017/val.txt"
    split.write_text(split.read_text() + "demo-99\n")
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), split, "demo-99", out=out, problem="does not exist")


def test_davis2016_image_set_naming_a_missing_frame(caplog, tmp_path, bench, no_propagation):
    """DAVIS 2016's split file lists every frame/mask pair: a listed frame that is gone is named."""
    root = tmp_path / "davis2016"
    shutil.copytree(bench / "JPEGImages", root / "JPEGImages")
    for src in sorted((bench / "Annotations/480p").glob("*/*.png")):  # 0/255 greyscale, as DAVIS 2016
        dst = root / "Annotations/480p" / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((np.asarray(Image.open(src)) == 1) * 255).astype(np.uint8)).save(dst)
    lines = [
        f"/JPEGImages/480p/{p.parent.name}/{p.stem}.jpg /Annotations/480p/{p.parent.name}/{p.stem}.png"
        for p in sorted((root / "JPEGImages/480p").glob("*/*.jpg"))
    ]
    split = root / "ImageSets/480p/val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("\n".join(lines) + "\n")
    (root / "JPEGImages/480p/demo-00/00003.jpg").unlink()
    out = tmp_path / "pred"
    args = ["propagate", *PARAMS, "--encoder", "random", "--benchmark", "davis2016", "--data", root, "--out", out]
    assert_fails(caplog, args, split, "/JPEGImages/480p/demo-00/00003.jpg", out=out, problem="does not exist")


# --------------------------------------------------------------------------- encoder checkpoints (hvc propagate --encoder)


@pytest.fixture(scope="module")
def encoder_state() -> dict:
    from hvc.methods.hvc.model import Backbone

    torch.manual_seed(0)
    return Backbone().state_dict()


def test_propagate_refuses_another_models_checkpoint(caplog, tmp_path, bench, no_propagation):
    from torchvision.models import resnet50

    bad = tmp_path / "bad.pt"
    torch.save(resnet50().state_dict(), bad)
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out, bad), bad, out=out, problem="another model's weights")
    assert "of another shape" in message and len(message) < 600  # a summary, not torch's 200-line list


def test_propagate_refuses_a_truncated_checkpoint(caplog, tmp_path, bench, encoder_state, no_propagation):
    good = tmp_path / "good.pt"
    torch.save(encoder_state, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out, bad), bad, out=out, problem="truncated")
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["text_file", "missing", "folder", "tensor", "python_objects", "renamed_keys"])
def test_propagate_refuses_other_encoder_files(caplog, tmp_path, bench, encoder_state, no_propagation, kind):
    bad = tmp_path / "encoder.pt"
    if kind == "text_file":
        bad.write_text("train:\n  lr: 0.001\n")
    elif kind == "folder":
        bad.mkdir()
    elif kind == "tensor":
        torch.save(torch.zeros(3), bad)
    elif kind == "python_objects":
        torch.save({"weights": encoder_state, "note": object()}, bad)
    elif kind == "renamed_keys":
        torch.save({f"backbone.{k}": v for k, v in encoder_state.items()}, bad)
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out, bad), bad, out=out)
    assert "\n" not in message and len(message) < 600


def test_propagate_refuses_the_training_checkpoint(caplog, tmp_path, bench, encoder_state, no_propagation):
    """A likely slip: --encoder .../checkpoint.pt (the full training state) instead of encoder.pt."""
    bad = tmp_path / "model" / "checkpoint.pt"
    bad.parent.mkdir()
    torch.save({"model": encoder_state, "optimizer": {}, "step": 2, "rng": {"numpy": np.random.get_state()}}, bad)
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out, bad), bad, "encoder.pt", out=out, problem="training state")


def test_propagate_accepts_a_good_checkpoint(caplog, tmp_path, bench, encoder_state):
    """The checks above refuse only bad input: a backbone state dict is accepted."""
    from hvc.eval.encoders import load_encoder

    good = tmp_path / "encoder.pt"
    torch.save(encoder_state, good)
    net = load_encoder(str(good))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in encoder_state.items())


# --------------------------------------------------------------------------- predictions and ground truth (hvc evaluate)


@pytest.fixture
def predictions(bench, tmp_path) -> Path:
    """Perfect predictions: a copy of the ground truth."""
    return Path(shutil.copytree(bench / "Annotations/480p", tmp_path / "pred"))


def evaluate_args(bench: Path, predictions: Path, out: Path) -> list:
    return ["evaluate", *PARAMS, "--benchmark", "demo", "--data", bench, "--predictions", predictions, "--out", out]


def assert_evaluate_fails(caplog, bench, predictions, tmp_path, *names, problem=None) -> str:
    out = tmp_path / "scores" / "demo.json"
    message = assert_fails(caplog, evaluate_args(bench, predictions, out), *names, out=out, problem=problem)
    assert not (tmp_path / "scores" / "demo.objects.json").exists()
    return message


def test_evaluate_scores_the_unharmed_copy(caplog, tmp_path, bench, predictions):
    out = tmp_path / "scores" / "demo.json"
    code, output, errors = hvc_cli(caplog, *evaluate_args(bench, predictions, out))
    assert code == 0, (output, errors)
    assert read_json(out)["JF_mean"] == 1.0


def test_evaluate_refuses_an_rgb_prediction(caplog, tmp_path, bench, predictions):
    bad = predictions / "demo-00/00003.png"
    _write_rgb(bad)
    assert_evaluate_fails(caplog, bench, predictions, tmp_path, bad, problem="mode 'RGB'")


def test_evaluate_refuses_an_rgb_ground_truth_mask(caplog, tmp_path, bench, predictions):
    bad = bench / "Annotations/480p/demo-00/00003.png"
    _write_rgb(bad)
    assert_evaluate_fails(caplog, bench, predictions, tmp_path, bad, problem="mode 'RGB'")


def test_evaluate_refuses_a_ground_truth_object_absent_from_the_first_frame(caplog, tmp_path, bench, predictions):
    """The protocol scores the objects of frame 0; a later object would be dropped silently."""
    bad = bench / "Annotations/480p/demo-01/00004.png"
    labels = np.asarray(Image.open(bad)).copy()
    first = np.asarray(Image.open(bench / "Annotations/480p/demo-01/00000.png"))
    new = int(first.max()) + 3
    labels[:8, :8] = new
    write_mask(bad, labels)
    message = assert_evaluate_fails(
        caplog, bench, predictions, tmp_path, bad, "00000.png", problem="absent from the first frame"
    )
    assert f"[{new}]" in message


def test_evaluate_refuses_an_empty_first_frame_ground_truth(caplog, tmp_path, bench, predictions):
    bad = bench / "Annotations/480p/demo-01/00000.png"
    write_mask(bad, np.zeros((64, 96), np.uint8))
    assert_evaluate_fails(caplog, bench, predictions, tmp_path, bad, problem="empty")


def test_evaluate_refuses_a_missing_prediction(caplog, tmp_path, bench, predictions):
    missing = predictions / "demo-01/00002.png"
    missing.unlink()
    assert_evaluate_fails(caplog, bench, predictions, tmp_path, missing, problem="missing prediction")


def test_evaluate_refuses_a_prediction_of_another_size(caplog, tmp_path, bench, predictions):
    bad = predictions / "demo-01/00002.png"
    write_mask(bad, np.zeros((60, 80), np.uint8))
    message = assert_evaluate_fails(caplog, bench, predictions, tmp_path, bad)
    assert "80x60" in message and "96x64" in message


@pytest.mark.parametrize("damage", ["truncated_jpeg", "zero_bytes"])
def test_evaluate_refuses_a_damaged_prediction(caplog, tmp_path, bench, predictions, damage):
    bad = predictions / "demo-00/00004.png"
    DAMAGE[damage][0](bad)
    problem = {"truncated_jpeg": "truncated", "zero_bytes": "empty file"}[damage]
    assert_evaluate_fails(caplog, bench, predictions, tmp_path, bad, problem=problem)


def test_evaluate_refuses_a_missing_frame_in_the_benchmark(caplog, tmp_path, bench, predictions):
    (bench / "JPEGImages/480p/demo-00/00004.jpg").unlink()
    orphan = bench / "Annotations/480p/demo-00/00004.png"
    assert_evaluate_fails(caplog, bench, predictions, tmp_path, orphan, problem="has no frame")


# --------------------------------------------------------------------------- parameter files


def test_a_params_file_that_is_not_yaml(caplog, tmp_path, train_src):
    bad = tmp_path / "mine.yaml"
    bad.write_text("train:\n  lr: [0.001\n  batch_size: 16\n")  # unclosed bracket
    out = tmp_path / "shards"
    args = ["shards", "--params", ROOT / "params.yaml", "--params", bad, "--input", train_src, "--out", out]
    assert_fails(caplog, args, bad, out=out, problem="not valid YAML")


def test_a_params_file_that_is_not_a_mapping(caplog, tmp_path, train_src):
    bad = tmp_path / "mine.yaml"
    bad.write_text("- train.lr=0.001\n")
    out = tmp_path / "shards"
    args = ["shards", "--params", ROOT / "params.yaml", "--params", bad, "--input", train_src, "--out", out]
    assert_fails(caplog, args, bad, out=out, problem="mapping")


def test_a_params_file_that_is_binary(caplog, tmp_path, train_src):
    bad = tmp_path / "params.yaml"
    bad.write_bytes(jpeg_bytes())  # e.g. an image saved under the wrong name
    out = tmp_path / "shards"
    args = ["shards", "--params", bad, "--input", train_src, "--out", out]
    assert_fails(caplog, args, bad, out=out)


def test_an_unknown_benchmark(caplog, tmp_path, bench):
    out = tmp_path / "pred"
    args = ["propagate", *PARAMS, "--encoder", "random", "--benchmark", "kitti", "--out", out]
    assert_fails(caplog, args, "kitti", out=out, problem="is not one of")


def test_a_benchmark_that_is_not_downloaded(caplog, tmp_path, bench):
    out = tmp_path / "pred"
    args = ["propagate", *PARAMS, "--encoder", "random", "--benchmark", "vost", "--data", tmp_path / "VOST", "--out", out]
    assert_fails(caplog, args, tmp_path / "VOST" / "ImageSets" / "val.txt", out=out, problem="not found")


# --------------------------------------------------------------------------- archives (hvc.data.extract, hvc.data.download)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "make, member",
    [(_tar, "DS/../../evil.txt"), (_tar, "/tmp/evil.txt"), (_zip, "../evil.txt")],
    ids=["tar_dotdot", "tar_absolute", "zip_dotdot"],
)
def test_extract_refuses_a_path_traversal_member(tmp_path, make, member):
    archive = make(tmp_path / ("data.tar.gz" if make is _tar else "data.zip"), {"DS/ok.txt": b"ok", member: b"pwned"})
    target = tmp_path / "root" / "ds"
    with pytest.raises(DataError, match="refusing member") as e:
        extract_archives([archive], target, required=["DS"])
    assert e.value.path == str(archive) and member in e.value.problem
    assert not target.exists()
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert not [p for p in (tmp_path / "root").iterdir()]  # no temporary folder left behind


def test_fetch_refuses_a_hand_placed_archive_with_a_traversal_member(tmp_path):
    root = tmp_path / "data"
    (root / "downloads" / "ds").mkdir(parents=True)
    archive = _tar(root / "downloads" / "ds" / "ds.tar.gz", {"DS/ok.txt": b"ok", "DS/../../../evil.txt": b"pwned"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    registry = {
        "ds": {
            "role": "benchmark",
            "description": "a test dataset",
            "homepage": "https://example.org",
            "licence": "test",
            "manual": True,
            "instructions": "place ds.tar.gz by hand",
            "files": [
                {
                    "filename": "ds.tar.gz",
                    "size": archive.stat().st_size,
                    "checksum": f"sha256:{digest}",
                    "checksum_source": "test",
                }
            ],
            "layout": ["DS"],
        }
    }
    with pytest.raises(DataError, match=r"refusing member 'DS/\.\./\.\./\.\./evil\.txt'") as e:
        fetch("ds", root, progress=False, registry=registry)
    assert e.value.path == str(archive)
    assert not (root / "ds").exists() and not list(tmp_path.rglob("evil.txt"))


# --------------------------------------------------------------------------- shards (training stream, hvc train)


@pytest.fixture
def corrupt_shards(demo_dir, tmp_path) -> tuple[Path, str, str]:
    """A shard folder whose tar has 8 samples, one of them (key ``train__bad``) garbage bytes."""
    out = tmp_path / "shards"
    out.mkdir()
    name = "demo-train-000000.tar"
    images = sorted((demo_dir / "train").glob("*.jpg"))[:7]
    with wds.TarWriter(str(out / name)) as sink:
        for i, path in enumerate(images):
            sink.write({"__key__": f"train__{path.stem}", "jpg": path.read_bytes()})
            if i == 3:
                sink.write({"__key__": "train__bad", "jpg": b"this is not a JPEG " * 20})
    write_json(
        out / "index.json",
        {
            "prefix": "demo-train",
            "num_samples": 8,
            "num_skipped": 0,
            "shards": [{"name": name, "count": 8, "sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}],
        },
    )
    return out, name, "train__bad"


@pytest.mark.parametrize("workers", [0, 1])
def test_training_stream_names_the_shard_and_key_of_a_corrupt_member(corrupt_shards, workers):
    shard_dir, shard, key = corrupt_shards
    stream = TrainStream(shard_dir, TwoViews(32), batch_size=4, num_workers=workers)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    with pytest.raises(DataError) as e:  # also from a loader worker: a DataError, not a RuntimeError
        for _ in loader:
            pass
    assert shard in e.value.path and key in e.value.path, e.value
    assert "not a readable image" in e.value.problem
    assert "Traceback" not in str(e.value)


def test_training_stream_names_a_sample_without_an_image(corrupt_shards):
    shard_dir, shard, _ = corrupt_shards
    with wds.TarWriter(str(shard_dir / shard)) as sink:
        for i in range(8):
            member = {"txt": b"a caption"} if i == 5 else {"jpg": jpeg_bytes(seed=i)}
            sink.write({"__key__": f"train__{i}", **member})
    with pytest.raises(DataError, match="no image data") as e:
        for _ in TrainStream(shard_dir, TwoViews(32), batch_size=4):
            pass
    assert e.value.path.endswith(f"{shard}:train__5")


def test_training_stream_names_a_truncated_shard(corrupt_shards):
    shard_dir, shard, _ = corrupt_shards
    data = (shard_dir / shard).read_bytes()
    (shard_dir / shard).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=shard):
        for _ in TrainStream(shard_dir, TwoViews(32), batch_size=4):
            pass


def test_train_fails_naming_the_shard_and_key_of_a_corrupt_member(caplog, tmp_path, corrupt_shards):
    shard_dir, shard, key = corrupt_shards
    out = tmp_path / "model"
    args = ["train", *PARAMS, "--shards", shard_dir, "--out", out]
    assert_fails(caplog, args, f"{shard}:{key}", out=out, problem="not a readable image")


# --------------------------------------------------------------------------- YouTube-VOS meta.json


def make_ytvos(root: Path) -> Path:
    """A 2-video YouTube-VOS 'valid' split: frames every 5, masks where objects first appear."""
    split = root / "valid"
    meta = {"videos": {}}
    for v, (name, n) in enumerate([("0a1b", 4), ("ffee", 3)]):
        frames = [f"{5 * i:05d}" for i in range(n)]
        for f in frames:
            (split / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
            (split / "JPEGImages" / name / f"{f}.jpg").write_bytes(jpeg_bytes(seed=v))
        objects = {"1": {"category": "person", "frames": frames}}
        first = np.zeros((64, 96), np.uint8)
        first[10:30, 10:30] = 1
        write_mask(split / "Annotations" / name / f"{frames[0]}.png", first)
        if n > 3:  # object 2 enters at the third frame
            objects["2"] = {"category": "dog", "frames": frames[2:]}
            later = np.zeros((64, 96), np.uint8)
            later[40:60, 50:90] = 2
            write_mask(split / "Annotations" / name / f"{frames[2]}.png", later)
        meta["videos"][name] = {"objects": objects}
    write_json(split / "meta.json", meta)
    return split


def test_read_ytvos(tmp_path):
    split = make_ytvos(tmp_path)
    videos = read_ytvos(tmp_path, "valid")
    assert [v.name for v in videos] == ["0a1b", "ffee"]
    assert [p.name for p in videos[0].frames] == ["00000.jpg", "00005.jpg", "00010.jpg", "00015.jpg"]
    assert videos[0].masks == {0: split / "Annotations/0a1b/00000.png", 2: split / "Annotations/0a1b/00010.png"}
    assert videos[1].masks == {0: split / "Annotations/ffee/00000.png"}
    for v in videos:
        v.check()


@pytest.mark.parametrize(
    "harm, problem",
    [
        (lambda s: shutil.rmtree(s / "JPEGImages/ffee"), "lists video 'ffee'"),
        (lambda s: (s / "Annotations/0a1b/00010.png").unlink(), "object 2 is first annotated in frame 00010"),
        (lambda s: (s / "Annotations/ffee/00000.png").unlink(), "object 1 is first annotated in frame 00000"),
        (lambda s: (s / "JPEGImages/0a1b/00015.jpg").unlink(), "object 1 appears in frame 00015"),
    ],
    ids=["video_missing", "later_annotation_missing", "first_annotation_missing", "listed_frame_missing"],
)
def test_read_ytvos_refuses_a_meta_json_that_disagrees_with_the_folders(tmp_path, harm, problem):
    split = make_ytvos(tmp_path)
    harm(split)
    with pytest.raises(DataError) as e:
        read_ytvos(tmp_path, "valid")
    assert e.value.path == str(split / "meta.json")
    assert problem in e.value.problem


@pytest.mark.parametrize(
    "content, problem",
    [(b"{\"videos\": {", "not valid JSON"), (b"[1, 2]", "expected"), (b'{"videos": {"0a1b": {"objects": []}}}', "0a1b")],
    ids=["not_json", "not_a_mapping", "objects_not_a_mapping"],
)
def test_read_ytvos_refuses_a_malformed_meta_json(tmp_path, content, problem):
    split = make_ytvos(tmp_path)
    (split / "meta.json").write_bytes(content)
    with pytest.raises(DataError) as e:
        read_ytvos(tmp_path, "valid")
    assert e.value.path == str(split / "meta.json") and problem in e.value.problem


def test_read_ytvos_refuses_a_mask_without_its_frame(tmp_path):
    split = make_ytvos(tmp_path)
    write_mask(split / "Annotations/ffee/00020.png", np.ones((64, 96), np.uint8))
    with pytest.raises(DataError, match="has no frame 00020.jpg") as e:
        read_ytvos(tmp_path, "valid")
    assert e.value.path == str(split / "Annotations/ffee/00020.png")


# --------------------------------------------------------------------------- end to end, as a user sees it


def test_the_user_sees_one_line_and_exit_code_2(tmp_path, demo_dir):
    """Through a real subprocess: stderr ends with one line naming the file, no traceback."""
    bench = Path(shutil.copytree(demo_dir / "benchmark", tmp_path / "benchmark"))
    bad = bench / "JPEGImages/480p/demo-01/00004.jpg"
    bad.write_bytes(bad.read_bytes()[:500])
    out = tmp_path / "pred"
    cmd = [sys.executable, "-m", "hvc.cli", *map(str, propagate_args(bench, out))]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ, PYTHONWARNINGS="ignore")
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "stage propagate failed" in last and str(bad) in last and "truncated" in last
    assert not out.exists() and not list(tmp_path.glob(".pred.*"))
