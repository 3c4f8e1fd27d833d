"""No hang, no silent wrong result, no lost input: hostile inputs, a flaky network, edits mid-run.

Each test stages one of these through the real entry point (the ``hvc`` CLI in-process,
Snakemake in a subprocess, or the module's API where there is no CLI) and asserts that it
ends promptly with one clear line (exit code 2, naming the file), or is handled: bounded
retries with pauses, a warning in the scores, outputs readable by the group.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_bad_input import PARAMS, assert_fails, hvc_cli, propagate_args
from urllib3.util import Retry

import hvc.eval.video
import hvc.eval.predict
from hvc.eval.readers import read_davis
from hvc.data.download import download, fetch
from hvc.io import DataError, OutputError, atomic_dir, atomic_path, read_json, read_mask, sha256_file, write_json, write_mask
from hvc.eval.metrics import _read_sequence
from hvc.config.params import ParamsError, load_params
from hvc.config.ids import stage_ids
from hvc.data.shards import list_training_images, write_shards
from workflow_copy import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILES = [ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]


@pytest.fixture
def shard_dir(demo_dir, tmp_path) -> Path:
    """The demo training images in 3 shards of 8 samples."""
    out = tmp_path / "shards"
    write_shards(list_training_images(demo_dir, "demo"), demo_dir, out, "demo-train", max_count=8)
    return out


def train_args(shards: Path, out: Path, *sets: str) -> list:
    return ["train", *PARAMS, *[a for s in sets for a in ("--set", s)], "--shards", shards, "--out", out]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- 1. training ends when the data runs short


def _drop_member(shard: Path) -> None:
    """Remove one sample (its .jpg member) from a tar shard, as ``tar --delete`` would."""
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(shard, "w") as tf:
        for m, data in members[1:]:
            tf.addfile(m, io.BytesIO(data))


@pytest.mark.timeout(120)
def test_train_stops_when_a_shard_holds_fewer_samples_than_its_index(caplog, tmp_path, shard_dir):
    """Steps per epoch come from index.json; an epoch that yields fewer batches must stop
    the run with an error, not loop forever on an exhausted loader."""
    index = read_json(shard_dir / "index.json")
    shard = shard_dir / index["shards"][1]["name"]
    _drop_member(shard)
    # the index keeps the old count; its checksum and size are updated so that only the count lies
    index["shards"][1].update(sha256=sha256_file(shard), bytes=shard.stat().st_size)
    write_json(shard_dir / "index.json", index)
    out = tmp_path / "model"
    # batch 8: 3 batches an epoch by the index, 2 by the shards; max_steps runs past epoch 0
    args = train_args(shard_dir, out, "train.batch_size=8", "train.max_steps=5")
    assert_fails(caplog, args, shard_dir, out=out, problem="fewer readable samples than listed")


# --------------------------------------------------------------------------- 2. downloads: bounded retries, with pauses


class _FlakyHandler(BaseHTTPRequestHandler):
    """Serves ``server.body`` with 200 whatever the Range, announcing ``len(body) + extra``
    bytes and sending at most ``drop`` of them before hanging up. Answers 404 after
    ``limit`` requests, so that a client that retries forever fails the test, not hangs."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        with srv.lock:
            srv.times.append(time.monotonic())
            n = len(srv.times)
        if n > srv.limit:
            self.send_error(404)
            return
        body = srv.body
        start = 0
        rng = self.headers.get("Range")
        if srv.honour_range and rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start + srv.extra))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        self.wfile.write(body[start : start + srv.drop])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def flaky(loopback_server) -> ThreadingHTTPServer:
    httpd = loopback_server(_FlakyHandler)
    httpd.lock, httpd.times, httpd.limit = threading.Lock(), [], 40
    httpd.body, httpd.extra, httpd.drop, httpd.honour_range = os.urandom(5000), 0, 1000, False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/f.bin"
    return httpd


BACKOFF = 0.05


def _assert_bounded_with_pauses(flaky, tmp_path) -> None:
    with pytest.raises(DataError, match="after retries") as e:
        download(flaky.url, tmp_path / "f.bin", progress=False, retry=Retry(total=3, backoff_factor=BACKOFF))
    assert e.value.path == str(tmp_path / "f.bin")
    assert len(flaky.times) <= 5, f"{len(flaky.times)} requests"
    gaps = np.diff(flaky.times)
    assert (gaps >= BACKOFF * 0.9).all(), f"retried without a pause: {gaps}"


def test_download_gives_up_on_a_server_that_drops_and_ignores_range(flaky, tmp_path):
    """Each attempt gets 1000 bytes, then the next one restarts at byte 0 (200): no progress."""
    _assert_bounded_with_pauses(flaky, tmp_path)


def test_download_gives_up_on_a_content_length_larger_than_the_body(flaky, tmp_path):
    """The server announces 100 bytes more than it has (and no registry size is known)."""
    flaky.extra, flaky.drop = 100, 10**9
    _assert_bounded_with_pauses(flaky, tmp_path)


def test_download_that_makes_progress_resumes_past_the_retry_count(flaky, tmp_path):
    """Interruptions that each add bytes are not failures: 5 resumes with 2 retries allowed."""
    flaky.honour_range = True
    path = download(flaky.url, tmp_path / "f.bin", progress=False, retry=Retry(total=2, backoff_factor=0.01))
    assert path.read_bytes() == flaky.body and len(flaky.times) == 5


# --------------------------------------------------------------------------- 3. parameters edited during a run


def test_a_stage_refuses_parameters_that_no_longer_give_its_planned_id(caplog, tmp_path):
    p = load_params(PARAMS_FILES)
    ids = stage_ids(p)
    edited = tmp_path / "edited.yaml"
    edited.write_text("demo:\n  seed: 7\n")
    out = tmp_path / "artifacts" / "data" / ids["demo_data"]
    args = ["demo-data", *PARAMS, "--params", edited, "--expect-id", ids["demo_data"], "--out", out]
    message = assert_fails(caplog, args, out, ids["demo_data"], out=out, problem="edited since the workflow started")
    assert stage_ids(load_params([*PARAMS_FILES, edited]))["demo_data"] in message
    code, _, errors = hvc_cli(caplog, "demo-data", *PARAMS, "--expect-id", ids["demo_data"], "--out", out)
    assert code == 0 and out.is_dir(), errors


def test_train_and_propagate_check_their_ids_too(caplog, tmp_path, shard_dir, bench):
    out = tmp_path / "model"
    assert_fails(caplog, [*train_args(shard_dir, out), "--expect-id", "0123456789ab"], out, "0123456789ab", out=out, problem="(stage train)")
    pred = tmp_path / "pred"
    args = [*propagate_args(bench, pred), "--expect-id", "0123456789ab"]
    assert_fails(caplog, args, pred, "0123456789ab", out=pred, problem="(stage propagate)")


def _workspace(tmp_path: Path, configs: str) -> Path:
    return copy_workflow(tmp_path / "ws", config_dir=configs)


def _snakemake(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(["snakemake", *args], cwd=ws, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_workflow_jobs_are_handed_the_id_of_their_output(tmp_path):
    """Every job that writes a content-addressed output passes that id to `--expect-id`."""
    ws = _workspace(tmp_path, "configs")
    proc = _snakemake(ws, "-n", "-p", "all_tables", "--cores", "1", "--configfile", "configs/tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [shlex.split(line.removeprefix("Shell command: ")) for line in proc.stdout.splitlines() if line.startswith("Shell command: hvc")]
    checked = set()
    for cmd in commands:
        stage = cmd[1]
        if stage not in ("demo-data", "shards", "train", "propagate"):
            continue
        out = cmd[cmd.index("--out") + 1]
        expected = cmd[cmd.index("--expect-id") + 1]
        planned = out.split("/")[3 if stage == "propagate" else 2]  # artifacts/predictions/<encoder>/<id>/<benchmark>
        assert expected == planned, cmd
        checked.add(stage)
    assert checked == {"demo-data", "shards", "train", "propagate"}


# --------------------------------------------------------------------------- 4. masks that are not what they claim


def _evaluate(caplog, bench: Path, predictions: Path, out: Path):
    return hvc_cli(caplog, "evaluate", *PARAMS, "--benchmark", "demo", "--data", bench, "--predictions", predictions, "--out", out)


def test_evaluate_refuses_a_greyscale_jpeg_saved_as_an_annotation(caplog, tmp_path, bench):
    pred = Path(shutil.copytree(bench / "Annotations/480p", tmp_path / "pred"))
    gt = bench / "Annotations/480p/demo-00/00000.png"  # the first frame: its labels set the objects scored
    grey = (np.random.default_rng(0).integers(0, 255, read_mask(gt).shape)).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(gt, format="JPEG")
    out = tmp_path / "scores.json"
    code, _, errors = _evaluate(caplog, bench, pred, out)
    assert code == 2 and len(errors) == 1 and str(gt) in errors[0] and "not a PNG" in errors[0], errors
    assert not out.exists()


def test_read_mask_refuses_greyscale_values_other_than_0_and_255(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 255], [17, 255]], np.uint8), mode="L").save(path)
    with pytest.raises(DataError, match="other than 0 and 255 \\(17\\)") as e:
        read_mask(path)
    assert e.value.path == str(path)
    assert read_mask(path, greyscale_labels=True).tolist() == [[0, 255], [17, 255]]  # VIP part ids


def test_a_gap_in_object_ids_is_a_warning_in_the_scores_and_the_log(caplog, tmp_path, bench):
    """Labels {1, 3}: the toolkit scores objects 1..3, the phantom object 2 as perfect."""
    seq = bench / "Annotations/480p/demo-00"
    for png in seq.glob("*.png"):  # object 1 becomes 3
        labels = read_mask(png)
        write_mask(png, np.where(labels > 0, 3, 0))
    first = read_mask(seq / "00000.png")
    first[:4, :4] = 1  # a small object 1
    write_mask(seq / "00000.png", first)
    assert sorted(np.unique(read_mask(seq / "00000.png"))) == [0, 1, 3]
    pred = Path(shutil.copytree(bench / "Annotations/480p", tmp_path / "pred"))
    out = tmp_path / "scores.json"
    with caplog.at_level(logging.WARNING):
        code, _, errors = _evaluate(caplog, bench, pred, out)
    assert code == 0, errors
    warnings = read_json(out)["warnings"]
    assert len(warnings) == 1 and "demo-00" in warnings[0] and "[2]" in warnings[0]
    assert any("demo-00" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


# --------------------------------------------------------------------------- 5. duplicate keys, empty files


def test_a_duplicate_section_is_refused_naming_the_key_and_both_lines(caplog, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text() + "train:\n  lr: 0.5\n")
    first = next(n for n, line in enumerate(params.read_text().splitlines(), 1) if line.startswith("train:"))
    last = len(params.read_text().splitlines()) - 1
    code, _, errors = hvc_cli(caplog, "params", "--check", "--params", params)
    assert code == 2 and len(errors) == 1, errors
    assert "duplicate key 'train'" in errors[0] and f"lines {first} and {last}" in errors[0] and str(params) in errors[0]


def test_an_empty_params_file_is_refused(caplog, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# emptied by mistake\n")
    code, _, errors = hvc_cli(caplog, "params", "--check", "--params", params)
    assert code == 2 and "empty" in errors[0] and str(params) in errors[0], errors


# --------------------------------------------------------------------------- 6. non-finite numbers


@pytest.mark.parametrize(
    "override", ["train.lr=.inf", "propagation.temperature=.inf", "hvc.alpha=.nan", "hvc.scale=[0, .nan]", "eval.bound_th=.nan"]
)
def test_non_finite_parameters_are_refused(override):
    key = override.split("=")[0]
    from hvc.config.params import parse_overrides

    with pytest.raises(ParamsError, match=re.escape(key) + ".*finite"):
        load_params(PARAMS_FILES, parse_overrides([override]))


@pytest.mark.timeout(120)
def test_training_stops_on_a_non_finite_loss(caplog, tmp_path, shard_dir):
    out = tmp_path / "model"
    assert_fails(caplog, train_args(shard_dir, out, "train.lr=1e30", "train.max_steps=4"), out=out, problem="loss is nan")


# --------------------------------------------------------------------------- 7. shard checksums


def test_train_refuses_a_replaced_shard(caplog, tmp_path, shard_dir):
    index = read_json(shard_dir / "index.json")
    a = shard_dir / index["shards"][0]["name"]
    data = bytearray(a.read_bytes())
    data[600] ^= 0xFF  # same size, one byte changed inside the first member
    a.write_bytes(bytes(data))
    out = tmp_path / "model"
    assert_fails(caplog, train_args(shard_dir, out), a, out=out, problem="differs from index.json")
    a.write_bytes(bytes(data[:-512]))  # shorter: caught by the size check alone
    assert_fails(caplog, [*train_args(shard_dir, out), "--verify-shards", "size"], a, out=out, problem="bytes but index.json lists")


# --------------------------------------------------------------------------- 8. outputs never overwrite inputs


@pytest.mark.parametrize("where", ["same", "inside", "above"])
def test_propagate_refuses_an_output_that_overlaps_its_input(caplog, tmp_path, bench, where):
    before = tree_digest(bench)
    out = {"same": bench, "inside": bench / "JPEGImages" / "pred", "above": tmp_path}[where]
    relation = {"same": "is", "inside": "lies inside", "above": "contains"}[where]
    code, _, errors = hvc_cli(caplog, *propagate_args(bench, out))
    assert code == 2 and len(errors) == 1 and f"output {relation} the input --data" in errors[0], errors
    assert tree_digest(bench) == before


# --------------------------------------------------------------------------- 9. one line, never a traceback


def test_a_frame_that_is_a_symlink_to_itself(caplog, tmp_path, bench):
    frame = bench / "JPEGImages/480p/demo-01/00003.jpg"
    frame.unlink()
    frame.symlink_to(frame.name)
    out = tmp_path / "pred"
    assert_fails(caplog, propagate_args(bench, out), frame, out=out, problem="cannot read")


def test_a_huge_frame_is_refused_before_propagation(caplog, tmp_path, bench, monkeypatch):
    frame = bench / "JPEGImages/480p/demo-01/00003.jpg"
    Image.new("RGB", (8000, 8000)).save(frame, quality=50)
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out), frame, out=out, problem="8000x8000 (64.0 Mpixel)")
    # the bound applies to the first frame (whose size all others must share), too
    monkeypatch.setattr(hvc.eval.video, "MAX_FRAME_PIXELS", 1000)
    frame.write_bytes((bench / "JPEGImages/480p/demo-01/00002.jpg").read_bytes())
    assert_fails(caplog, propagate_args(bench, out), bench / "Annotations/480p/demo-00/00000.png", out=out, problem="Mpixel")
    assert "Traceback" not in message


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_an_unreadable_training_image(caplog, tmp_path, demo_dir, mode):
    src = tmp_path / "src"
    shutil.copytree(demo_dir / "train", src / "train")
    bad = sorted((src / "train").glob("*.jpg"))[3]
    bad.unlink()
    bad.symlink_to(bad.name)  # reading it fails with ELOOP whoever runs the test (root reads mode 000 files)
    out = tmp_path / "shards"
    args = ["shards", *PARAMS, "--set", f"shards.on_bad_image={mode}", "--input", src, "--out", out]
    if mode == "fail":
        assert_fails(caplog, args, bad, out=out, problem="cannot read")
        return
    code, _, errors = hvc_cli(caplog, *args)
    assert code == 0, errors
    assert [s["file"] for s in read_json(out / "report.json")["skipped"]] == [str(bad)]


def test_a_configfile_path_with_a_space(tmp_path):
    """The rules quote every path they hand to the shell."""
    ws = _workspace(tmp_path, "my configs")
    data_id = stage_ids(load_params(PARAMS_FILES))["demo_data"]
    proc = _snakemake(ws, f"artifacts/data/{data_id}", "--cores", "1", "--configfile", "my configs/tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ws / "artifacts/data" / data_id / "manifest.json").is_file()


def test_the_imagenet_baseline_without_network(caplog, tmp_path, bench, monkeypatch):
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out, "imagenet"), tmp_path / "torch" / "hub" / "checkpoints", out=out)
    assert "without network" in message and "resnet18" in message


def test_a_full_disk_names_the_output(caplog, tmp_path, bench, monkeypatch):
    def full(path, labels):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hvc.eval.predict, "write_mask", full)
    out = tmp_path / "pred"
    message = assert_fails(caplog, propagate_args(bench, out), out, out=out, problem="No space left on device")
    assert not list(tmp_path.glob(".pred.*")), "temporary left behind"
    assert "Traceback" not in message


def test_a_full_disk_inside_a_folder_output_names_the_final_path(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="No space left") as e:
        with atomic_dir(target) as tmp:
            with atomic_path(tmp / "video" / "00001.png") as f:
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
    assert e.value.path == str(target / "video" / "00001.png")
    assert not target.exists() and not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- 10. a bad download without a checksum


def test_a_bad_download_without_checksum_is_moved_aside_and_fetched_again(flaky, tmp_path, caplog):
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("DS/a.txt", b"hello")
    flaky.body, flaky.drop = b"<html>503 Service Unavailable</html>", 10**9
    entry = {
        "role": "benchmark", "description": "test", "homepage": "http://127.0.0.1/", "licence": "test",
        "files": [{"filename": "ds.zip", "url": flaky.url, "size": None, "checksum": None, "checksum_source": "none published"}],
        "layout": ["DS"],
    }  # fmt: skip
    root = tmp_path / "root"
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match=r"moved to ds\.zip\.rejected.*downloads it again"):
        fetch("ds", root, progress=False, registry={"ds": entry}, retry=Retry(total=0))
    assert not any("recorded in" in r.getMessage() for r in caplog.records), "warned of a record never written"
    assert (root / "downloads/ds/ds.zip.rejected").is_file() and not (root / "downloads/ds/ds.zip").exists()

    flaky.body = good.getvalue()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out = fetch("ds", root, progress=False, registry={"ds": entry}, retry=Retry(total=0))
    assert (out / "DS/a.txt").read_bytes() == b"hello" and len(flaky.times) == 2
    stamp = read_json(out / ".hvc-fetch.json")
    warned = [r.getMessage() for r in caplog.records if "recorded in" in r.getMessage()]
    assert len(warned) == 1 and stamp["files"][0]["sha256"] in warned[0]


def test_a_hand_placed_bad_archive_names_the_file_to_delete(tmp_path):
    entry = {
        "role": "benchmark", "description": "test", "homepage": "http://127.0.0.1/", "licence": "test",
        "manual": True, "instructions": "Register, then download.",
        "files": [{"filename": "ds.zip", "url": None, "size": None, "checksum": None, "checksum_source": "none published"}],
        "layout": ["DS"],
    }  # fmt: skip
    archive = tmp_path / "root/downloads/ds/ds.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"not an archive")
    with pytest.raises(DataError, match=f"delete or replace {re.escape(str(archive))}"):
        fetch("ds", tmp_path / "root", progress=False, registry={"ds": entry})
    assert archive.is_file()  # a hand-placed file is the user's: left where it is


# --------------------------------------------------------------------------- 11. outputs follow the umask


@pytest.fixture
def umask() -> Iterator:
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "folder") as tmp:
        write_mask(tmp / "video" / "00000.png", np.zeros((4, 4), np.uint8))
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "folder/video").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "folder/video/00000.png").stat().st_mode) == file_mode


def test_stage_outputs_are_readable_by_the_group(caplog, tmp_path, umask):
    umask(0o022)
    out = tmp_path / "demo"
    code, _, errors = hvc_cli(caplog, "demo-data", *PARAMS, "--out", out)
    assert code == 0, errors
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes <= {0o644, 0o755}, sorted(map(oct, modes))


# --------------------------------------------------------------------------- also: frame order, DVC analytics


def test_frames_without_zero_padding_are_read_in_numeric_order(tmp_path, bench):
    for seq in ("demo-00", "demo-01"):
        frames = sorted((bench / "JPEGImages/480p" / seq).glob("*.jpg"))
        for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            for i, f in enumerate(frames):
                (bench / folder / "480p" / seq / f"{f.stem}{suffix}").rename(bench / folder / "480p" / seq / f"{i}{suffix}")
    for i in range(6, 12):  # up to 11 frames: 10 and 11 sort between 1 and 2 by name
        for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            shutil.copy(bench / folder / "480p/demo-00" / f"5{suffix}", bench / folder / "480p/demo-00" / f"{i}{suffix}")
    video = read_davis(bench, "ImageSets/2017/val.txt", "davis2017")[0]
    assert [p.stem for p in video.frames] == [str(i) for i in range(12)]
    gt, _ = _read_sequence(bench / "Annotations/480p/demo-00", bench / "Annotations/480p/demo-00")
    expected = [read_mask(bench / "Annotations/480p/demo-00" / f"{i}.png") for i in range(12)]
    np.testing.assert_array_equal(gt, np.stack(expected))


def test_dvc_usage_analytics_are_off_in_the_repository():
    proc = subprocess.run(["dvc", "config", "core.analytics"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip() == "false", (proc.stdout, proc.stderr)
