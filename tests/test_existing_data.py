"""Datasets a lab already has: `hvc fetch NAME --from DIR` / data.sources, checked on a tiny
generated DAVIS-layout folder (links, manifest, verification), and `hvc fetch --list`."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import hvc.data.download as dl
from hvc.eval.readers import read_benchmark
from hvc.cli import app
from hvc.data.download import MANIFEST_NAME, STAMP_NAME, dataset_rows, fetch_from, verify_file
from hvc.io import DataError, file_digests, read_json, write_mask


def make_davis(folder: Path, sequences=("bear", "car"), frames: int = 3) -> Path:
    """A tiny DAVIS 2017 folder: JPEGImages/480p, Annotations/480p, ImageSets/2017/val.txt."""
    rng = np.random.default_rng(0)
    for seq in sequences:
        (folder / "JPEGImages/480p" / seq).mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / "JPEGImages/480p" / seq / f"{t:05d}.jpg")
            mask = np.zeros((24, 32), np.uint8)
            mask[5:12, 5 + t : 12 + t] = 1
            write_mask(folder / "Annotations/480p" / seq / f"{t:05d}.png", mask)
    (folder / "ImageSets/2017").mkdir(parents=True)
    (folder / "ImageSets/2017/val.txt").write_text("\n".join(sequences) + "\n")
    return folder


@pytest.fixture()
def lab(tmp_path: Path) -> Path:
    """A lab's shared disk holding DAVIS as ``<lab>/DAVIS``."""
    make_davis(tmp_path / "lab" / "DAVIS")
    return tmp_path / "lab"


def test_existing_folder_is_linked_with_a_manifest_and_read_as_the_benchmark(lab: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    target = fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)  # the DAVIS folder itself
    assert target == root / "davis2017_trainval"
    link = target / "DAVIS"
    assert link.is_symlink() and link.resolve() == (lab / "DAVIS").resolve()  # linked, not copied
    manifest = read_json(target / MANIFEST_NAME)
    files = {e["path"]: e for e in manifest["files"]}
    assert len(files) == 2 * 3 * 2 + 1 and "DAVIS/ImageSets/2017/val.txt" in files
    jpg = lab / "DAVIS/JPEGImages/480p/bear/00000.jpg"
    entry = files["DAVIS/JPEGImages/480p/bear/00000.jpg"]
    assert entry["size"] == jpg.stat().st_size and entry["sha256"] == hashlib.sha256(jpg.read_bytes()).hexdigest()
    assert manifest["bytes"] == sum(e["size"] for e in files.values()) and len(manifest["content_sha256"]) == 64
    stamp = read_json(target / STAMP_NAME)
    assert stamp["content_sha256"] == manifest["content_sha256"] and stamp["source"] == str((lab / "DAVIS").resolve())
    videos = read_benchmark("davis2017", target / "DAVIS")
    assert [v.name for v in videos] == ["bear", "car"] and len(videos[0].frames) == 3

    # the parent folder (holding DAVIS/...) is accepted too, and gives the same content hash
    again = fetch_from("davis2017_trainval", tmp_path / "data2", lab, progress=False)
    assert read_json(again / MANIFEST_NAME)["content_sha256"] == manifest["content_sha256"]


def test_later_calls_verify_against_the_manifest(lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)
    hashed = []
    real = dl.file_digests
    monkeypatch.setattr(dl, "file_digests", lambda path, *a, **k: hashed.append(Path(path).name) or real(path, *a, **k))
    fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)
    assert hashed == []  # unchanged files: list, sizes and times compared, nothing read

    png = lab / "DAVIS/Annotations/480p/car/00002.png"
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    png.write_bytes(bytes(data))
    with pytest.raises(DataError, match="content differs from the manifest") as e:
        fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)
    assert str(png) in str(e.value) and "\n" not in str(e.value)

    (lab / "DAVIS/ImageSets/2017/val.txt").write_text("bear\n")  # another size
    os.remove(png)
    with pytest.raises(DataError, match="missing"):
        fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)


def test_added_file_and_rehash(lab: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)
    jpg = lab / "DAVIS/JPEGImages/480p/bear/00001.jpg"
    stat = jpg.stat()
    data = bytearray(jpg.read_bytes())
    data[-5] ^= 0xFF
    jpg.write_bytes(bytes(data))
    os.utime(jpg, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # content changed, time restored
    fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)  # the quick check cannot see it
    with pytest.raises(DataError, match="content differs"):
        fetch_from("davis2017_trainval", root, lab / "DAVIS", rehash=True, progress=False)  # --verify does
    jpg.write_bytes(bytes(data[:-5]) + bytes([data[-5] ^ 0xFF]) + bytes(data[-4:]))
    os.utime(jpg, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (lab / "DAVIS/JPEGImages/480p/bear/extra.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="not in the manifest"):
        fetch_from("davis2017_trainval", root, lab / "DAVIS", progress=False)


def test_wrong_layout_and_an_existing_download_are_refused(lab: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not have the layout of davis2017_trainval: missing"):
        fetch_from("davis2017_trainval", tmp_path / "data", lab / "DAVIS" / "JPEGImages", progress=False)
    assert not (tmp_path / "data" / "davis2017_trainval").exists()  # nothing half-made
    with pytest.raises(DataError, match="not a folder"):
        fetch_from("davis2017_trainval", tmp_path / "data", tmp_path / "nope", progress=False)
    downloaded = tmp_path / "data" / "davis2017_trainval"
    downloaded.mkdir(parents=True)  # an empty folder (Snakemake makes one for the stamp) is free to use
    fetch_from("davis2017_trainval", tmp_path / "data", lab / "DAVIS", progress=False)
    shutil.rmtree(downloaded)
    make_davis(downloaded / "DAVIS")
    with pytest.raises(DataError, match="already holds a copy"):
        fetch_from("davis2017_trainval", tmp_path / "data", lab / "DAVIS", progress=False)
    # ... but it can be adopted as it is: checked and stamped in place, nothing linked
    target = fetch_from("davis2017_trainval", tmp_path / "data", downloaded, progress=False)
    assert not (target / "DAVIS").is_symlink() and (target / STAMP_NAME).exists()
    assert not any(e["path"].startswith(".hvc") for e in read_json(target / MANIFEST_NAME)["files"])
    fetch_from("davis2017_trainval", tmp_path / "data", downloaded, progress=False)  # verified again: fine


def test_cli_from_and_data_sources(lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["fetch", "davis2017_trainval", "--from", str(lab / "DAVIS"), "--root", "data"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data/davis2017_trainval/DAVIS").is_symlink()
    # without --from, a linked dataset is verified against its manifest, never downloaded
    monkeypatch.setattr(dl, "fetch", lambda *a, **k: pytest.fail("must not download"))
    assert CliRunner().invoke(app, ["fetch", "davis2017_trainval", "--root", "data"]).exit_code == 0
    # data.sources in the parameter files
    (tmp_path / "p.yaml").write_text(f"data:\n  root: other\n  sources:\n    davis2017_trainval: {lab}\n")
    r = CliRunner().invoke(app, ["fetch", "davis2017_trainval", "-p", "p.yaml"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "other/davis2017_trainval/DAVIS").resolve() == (lab / "DAVIS").resolve()
    (tmp_path / "bad.yaml").write_text("data:\n  sources:\n    davis2099: /x\n")
    caplog.clear()
    r = CliRunner().invoke(app, ["fetch", "davis2017_trainval", "-p", "bad.yaml"])
    errors = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
    assert r.exit_code == 2 and len(errors) == 1 and "data.sources" in errors[0] and "davis2099" in errors[0]


def test_fetch_list_names_size_licence_and_manual(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in dataset_rows()}
    assert rows["davis2017_trainval"]["size"] == 832766765 and not rows["davis2017_trainval"]["manual"]
    assert rows["ytvos2018_val"]["manual"] and rows["ytvos2018_val"]["size"] is None
    r = CliRunner().invoke(app, ["fetch", "--list", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in rows:
        assert name in r.output
    assert "794 MiB" in r.output and "CC BY 4.0" in r.output and "register" in r.output


def test_all_checksums_in_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(os.urandom(3 << 20))
    digests = file_digests(f, ("sha256", "md5", "sha1"))
    assert digests == {alg: hashlib.new(alg, f.read_bytes()).hexdigest() for alg in ("sha256", "md5", "sha1")}
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    sha256 = verify_file(f, f.stat().st_size, "md5:" + digests["md5"])
    assert sha256 == digests["sha256"] and opened.count(f) == 1  # md5 and sha256 from one pass
