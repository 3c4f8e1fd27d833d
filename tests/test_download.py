"""hvc.data.download / hvc.data.extract against a local HTTP server on 127.0.0.1 (no other network).

The server is written here (http.server in a thread, port 0): it serves archives the
tests build in memory, honours ``Range: bytes=N-``, can drop the connection part-way
through a response, can ignore Range, and logs every request so the tests can assert
what was asked for and what was sent.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from urllib3.util import Retry

import hvc.data.download as dl
from hvc.data.download import DatasetSpec, ManualDownloadRequired, download, fetch, load_registry
from hvc.data.extract import extract_archives, extract_into
from hvc.io import DataError, read_json

# --------------------------------------------------------------------------- local server


@dataclass
class ServerState:
    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before dropping (once)
    ignore_range: set[str] = field(default_factory=set)
    log: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def gets(self, path: str) -> list[dict]:
        return [e for e in self.log if e["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one response per connection: a drop is unambiguous

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        entry = {
            "path": self.path,
            "range": self.headers.get("Range"),
            "if_range": self.headers.get("If-Range"),
            "status": None,
            "sent": 0,
        }
        with state.lock:
            state.log.append(entry)
            data = state.files.get(self.path)
            drop = state.drop_after.pop(self.path, None)
        if data is None:
            entry["status"] = 404
            self.send_error(404)
            return
        start, status = 0, 200
        rng = entry["range"]
        if rng and self.path not in state.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, f"client sent an unexpected Range header {rng!r}"
            start = int(m.group(1))
            if start >= len(data):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        # logged before writing: the client may read the body and the test check this log
        # before this thread runs again
        if drop is not None:  # simulate an interrupted transfer: send part, then hang up
            entry["sent"], entry["dropped"] = drop, True
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        entry["sent"] = len(body)
        self.wfile.write(body)


@pytest.fixture
def server(loopback_server) -> ServerState:
    state = ServerState()
    httpd = loopback_server(_Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    return state


# --------------------------------------------------------------------------- archives


def _payload(n: int, seed: int = 0) -> bytes:
    """Incompressible bytes, so archive sizes are predictable and the drop lands mid-file."""
    return random.Random(seed).randbytes(n)


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def make_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                name, data = m
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def entry(
    url: str | None,
    filename: str,
    data: bytes,
    layout: list[str],
    *,
    checksum: str | None = "auto",
    size: int | None | str = "auto",
    manual: bool = False,
) -> dict:
    """A registry entry (plain dict, validated by fetch) for one archive."""
    return {
        "role": "benchmark",
        "description": "test dataset",
        "homepage": "http://127.0.0.1/",
        "licence": "test data",
        "manual": manual,
        "instructions": "Register at the test site and download the file." if manual else None,
        "files": [
            {
                "filename": filename,
                "url": url,
                "size": len(data) if size == "auto" else size,
                "checksum": f"sha256:{hashlib.sha256(data).hexdigest()}" if checksum == "auto" else checksum,
                "checksum_source": "computed by the test",
            }
        ],
        "layout": layout,
    }


NO_WAIT = Retry(total=3, backoff_factor=0)


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --------------------------------------------------------------------------- fetch


def test_full_download_verifies_and_extracts(server: ServerState, tmp_path: Path) -> None:
    inner = _payload(50_000)
    data = make_zip({"DS/JPEGImages/480p/a/00000.jpg": inner, "DS/README.txt": b"hello"})
    server.files["/ds.zip"] = data
    reg = {"toy": entry(server.url("/ds.zip"), "ds.zip", data, ["DS/JPEGImages/480p"])}

    out = fetch("toy", tmp_path / "root", progress=False, registry=reg)

    assert out == tmp_path / "root" / "toy"
    assert (out / "DS/JPEGImages/480p/a/00000.jpg").read_bytes() == inner
    assert (out / "DS/README.txt").read_bytes() == b"hello"
    assert (tmp_path / "root/downloads/toy/ds.zip").read_bytes() == data  # kept for re-extraction
    assert not list((tmp_path / "root/downloads/toy").glob("*.part*"))
    stamp = read_json(out / dl.STAMP_NAME)
    assert stamp["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200)]


def test_tar_gz_with_md5_checksum(server: ServerState, tmp_path: Path) -> None:
    data = make_tar([("JHMDB/Rename_Images/clip/00001.png", _payload(4_000)), ("JHMDB/joints/clip/joint.mat", b"m")])
    server.files["/x.tar.gz"] = data
    reg = {
        "toy": entry(
            server.url("/x.tar.gz"),
            "x.tar.gz",
            data,
            ["JHMDB/Rename_Images"],
            checksum=f"md5:{hashlib.md5(data).hexdigest()}",
        )
    }
    out = fetch("toy", tmp_path, progress=False, registry=reg)
    assert (out / "JHMDB/joints/clip/joint.mat").read_bytes() == b"m"


def test_interrupted_download_resumes_with_range(server: ServerState, tmp_path: Path) -> None:
    data = make_zip({"DS/big.bin": _payload(300_000)})
    server.files["/big.zip"] = data
    server.drop_after["/big.zip"] = 100_000
    reg = {"toy": entry(server.url("/big.zip"), "big.zip", data, ["DS"])}

    out = fetch("toy", tmp_path, progress=False, registry=reg, retry=NO_WAIT)

    first, second = server.gets("/big.zip")
    assert first["range"] is None and first.get("dropped") and first["sent"] == 100_000
    assert second["range"] == "bytes=100000-"  # asked only for what was missing
    assert second["if_range"] == '"v1"'  # ...of the same file version (else the server sends it all)
    assert second["status"] == 206 and second["sent"] == len(data) - 100_000  # not a restart
    assert (out / "DS/big.bin").stat().st_size == 300_000


def test_partial_download_resumes_in_a_later_call(server: ServerState, tmp_path: Path) -> None:
    data = make_zip({"DS/big.bin": _payload(200_000, seed=1)})
    server.files["/big.zip"] = data
    server.drop_after["/big.zip"] = 70_000
    reg = {"toy": entry(server.url("/big.zip"), "big.zip", data, ["DS"])}

    with pytest.raises(DataError, match="next call resumes"):  # no retries allowed: gives up
        fetch("toy", tmp_path, progress=False, registry=reg, retry=Retry(total=0))
    part = tmp_path / "downloads/toy/big.zip.part"
    assert part.stat().st_size == 70_000
    assert not (tmp_path / "toy").exists()

    fetch("toy", tmp_path, progress=False, registry=reg, retry=NO_WAIT)  # e.g. after a crash
    assert server.gets("/big.zip")[-1]["range"] == "bytes=70000-"
    assert server.gets("/big.zip")[-1]["sent"] == len(data) - 70_000
    assert (tmp_path / "downloads/toy/big.zip").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server: ServerState, tmp_path: Path) -> None:
    data = make_zip({"DS/f.bin": _payload(120_000, seed=2)})
    server.files["/f.zip"] = data
    server.drop_after["/f.zip"] = 50_000
    server.ignore_range.add("/f.zip")
    dest = download(server.url("/f.zip"), tmp_path / "f.zip", size=len(data), progress=False, retry=NO_WAIT)
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200), ("bytes=50000-", 200)]
    assert dest.read_bytes() == data  # the whole body replaced the partial one, no splice


def test_complete_part_file_answered_416_is_kept(server: ServerState, tmp_path: Path) -> None:
    data = _payload(10_000, seed=3)
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)  # finished earlier, crash before the rename
    dest = download(server.url("/f.bin"), tmp_path / "f.bin", size=None, progress=False)
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=10000-", 416)]
    assert dest.read_bytes() == data


def test_http_error_names_url_and_file(server: ServerState, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.zip.*404"):
        download(server.url("/missing.zip"), tmp_path / "missing.zip", progress=False)


def test_size_announced_by_server_differs_from_registry(server: ServerState, tmp_path: Path) -> None:
    data = _payload(1_000)
    server.files["/f.bin"] = data
    with pytest.raises(DataError, match="offers 1000 bytes but the registry expects 999"):
        download(server.url("/f.bin"), tmp_path / "f.bin", size=999, progress=False)


def test_checksum_mismatch_is_reported_and_nothing_extracted(server: ServerState, tmp_path: Path) -> None:
    data = make_zip({"DS/a.txt": b"real content"})
    server.files["/ds.zip"] = data
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    reg = {"toy": entry(server.url("/ds.zip"), "ds.zip", data, ["DS"], checksum=wrong)}

    with pytest.raises(DataError) as err:
        fetch("toy", tmp_path / "root", progress=False, registry=reg)

    msg = str(err.value)
    assert "ds.zip" in msg and "mismatch" in msg
    assert wrong in msg  # expected
    assert "sha256:" + hashlib.sha256(data).hexdigest() in msg  # actual
    assert not (tmp_path / "root/toy").exists()
    # the bad download is set aside (the next call downloads again), no .part, no target
    assert tree(tmp_path / "root") == {"downloads", "downloads/toy", "downloads/toy/ds.zip.rejected"}


def test_traversal_zip_is_refused_and_nothing_escapes(server: ServerState, tmp_path: Path) -> None:
    data = make_zip({"DS/ok.txt": b"ok", "../evil.txt": b"pwned", "DS/../../evil2.txt": b"pwned"})
    server.files["/evil.zip"] = data
    reg = {"toy": entry(server.url("/evil.zip"), "evil.zip", data, ["DS"])}
    root = tmp_path / "root"

    with pytest.raises(DataError, match=r"evil\.zip.*refusing member '\.\./evil\.txt'"):
        fetch("toy", root, progress=False, registry=reg)

    assert sorted(os.listdir(tmp_path)) == ["root"]  # nothing written beside the root
    assert tree(root) == {"downloads", "downloads/toy", "downloads/toy/evil.zip"}  # no target, no temp dir
    assert not [p for p in tmp_path.rglob("evil*.txt")]


def test_symlink_out_of_target_in_tar_is_refused(server: ServerState, tmp_path: Path) -> None:
    data = make_tar(
        [
            ("DS/a.txt", b"a"),
            _special("DS/link", tarfile.SYMTYPE, "../../../outside"),
            ("DS/link/planted.txt", b"pwned"),
        ]
    )
    server.files["/s.tar.gz"] = data
    reg = {"toy": entry(server.url("/s.tar.gz"), "s.tar.gz", data, ["DS"])}
    root = tmp_path / "root"

    with pytest.raises(DataError, match=r"s\.tar\.gz.*'DS/link'.*symlink.*outside"):
        fetch("toy", root, progress=False, registry=reg)

    assert sorted(os.listdir(tmp_path)) == ["root"]
    assert not (root / "toy").exists()
    assert not list(tmp_path.rglob("planted.txt"))


def test_manual_dataset_instructions_then_verify_when_placed(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_zip({"valid/JPEGImages/v/00000.jpg": b"jpg", "valid/meta.json": b"{}"})
    reg = {
        "yt": entry(
            "https://example.org/get-data", "valid.zip", data, ["valid/JPEGImages", "valid/meta.json"], manual=True
        )
    }
    root = tmp_path / "root"
    expected = root / "downloads/yt/valid.zip"

    with pytest.raises(ManualDownloadRequired) as err:
        fetch("yt", root, progress=False, registry=reg)
    printed = capsys.readouterr().err
    for text in (
        "must be downloaded by hand",
        "Register at the test site",
        "valid.zip",
        "https://example.org/get-data",
        str(expected),
    ):
        assert text in printed and text in str(err.value)
    assert server.log == []  # never tries the network
    assert not (root / "yt").exists()

    expected.write_bytes(b"not the archive")  # wrong file placed: reported, and kept
    with pytest.raises(DataError, match="size mismatch"):
        fetch("yt", root, progress=False, registry=reg)
    assert expected.exists()

    expected.write_bytes(data)  # the user places the right file
    out = fetch("yt", root, progress=False, registry=reg)
    assert (out / "valid/meta.json").read_bytes() == b"{}"
    assert server.log == []


def test_second_fetch_is_a_no_op(server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_zip({"DS/a.txt": b"a"})
    server.files["/ds.zip"] = data
    reg = {"toy": entry(server.url("/ds.zip"), "ds.zip", data, ["DS"])}
    out = fetch("toy", tmp_path, progress=False, registry=reg)
    n_requests = len(server.log)
    stamp_before = (out / dl.STAMP_NAME).read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("the second fetch must not hash, download or extract")

    monkeypatch.setattr(dl, "file_digests", boom)
    monkeypatch.setattr(dl, "download", boom)
    monkeypatch.setattr(dl, "extract_archives", boom)
    assert fetch("toy", tmp_path, progress=False, registry=reg) == out
    assert len(server.log) == n_requests
    assert (out / dl.STAMP_NAME).read_bytes() == stamp_before


def test_changed_registry_entry_reverifies(server: ServerState, tmp_path: Path) -> None:
    data = make_zip({"DS/a.txt": b"a"})
    server.files["/ds.zip"] = data
    reg = {"toy": entry(server.url("/ds.zip"), "ds.zip", data, ["DS"], checksum=None)}
    fetch("toy", tmp_path, progress=False, registry=reg)  # no checksum yet: size only, sha256 stamped
    reg["toy"]["files"][0]["checksum"] = "md5:" + hashlib.md5(b"other").hexdigest()
    with pytest.raises(DataError, match="md5 checksum mismatch"):
        fetch("toy", tmp_path, progress=False, registry=reg)


def test_unknown_dataset_and_bad_entry(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        fetch("nope", tmp_path, registry={})
    bad = {
        "toy": {
            "role": "benchmark",
            "description": "d",
            "homepage": "http://x/",
            "licence": "l",
            "files": [{"filename": "a.zip", "checksum_source": "s"}],
            "layout": ["A"],
        }
    }
    with pytest.raises(DataError, match=r"no url.*manual"):
        fetch("toy", tmp_path, registry=bad)


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([("/abs.txt", b"x")], "absolute path"),
        ([("DS/../../up.txt", b"x")], "'..'"),
        ([("DS/a", b"x"), _special("DS/h", tarfile.LNKTYPE, "../../etc/passwd")], "'..'"),
        ([_special("DS/s", tarfile.SYMTYPE, "/etc/passwd")], "symlink to absolute"),
        ([_special("DS/dev", tarfile.CHRTYPE)], "device file"),
        ([_special("DS/fifo", tarfile.FIFOTYPE)], "device file"),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path: Path, members: list, problem: str) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(make_tar(members, mode="w"))
    target = tmp_path / "out" / "ds"
    with pytest.raises(DataError, match=re.escape(problem)) as err:
        extract_archives([archive], target)
    assert "a.tar" in str(err.value) and "refusing member" in str(err.value)
    assert not target.exists() and os.listdir(tmp_path / "out") == []


def test_zip_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("DS/link")
    info.external_attr = 0o120777 << 16  # S_IFLNK
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, "../../secret")
    archive = tmp_path / "l.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"l\.zip.*'DS/link'.*outside"):
        extract_into(archive, tmp_path / "out")


def test_in_tree_symlink_and_idempotent_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    archive.write_bytes(make_tar([("DS/a.txt", b"a"), _special("DS/b.txt", tarfile.SYMTYPE, "a.txt")], mode="w"))
    target = extract_archives([archive], tmp_path / "ds", required=["DS/a.txt"])
    assert (target / "DS/b.txt").read_bytes() == b"a"
    (target / "DS/marker").write_text("kept")
    assert extract_archives([archive], target) == target  # exists: second call does nothing
    assert (target / "DS/marker").exists()


def test_missing_layout_leaves_no_output(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"Other/x.txt": b"x"}))
    with pytest.raises(DataError, match=r"expected DAVIS/JPEGImages/480p.*Other"):
        extract_archives([archive], tmp_path / "ds", required=["DAVIS/JPEGImages/480p"])
    assert sorted(os.listdir(tmp_path)) == ["a.zip"]


def test_not_an_archive(tmp_path: Path) -> None:
    f = tmp_path / "x.zip"
    f.write_bytes(b"plain text")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        extract_into(f, tmp_path / "out")


# --------------------------------------------------------------------------- the registry file

EXPECTED = {
    "coco2017_train",
    "voc2012_trainval",
    "msra10k",
    "ytvos2018_train",
    "ytvos2018_val",
    "ytvos2019_val",
    "davis2016",
    "davis2017_trainval",
    "davis2017_testdev",
    "vost",
    "vip",
    "jhmdb",
}


def test_registry_loads_and_is_complete() -> None:
    reg = load_registry()
    assert set(reg) == EXPECTED
    for name, spec in reg.items():
        assert isinstance(spec, DatasetSpec)
        assert spec.homepage.startswith("http") and spec.licence.strip(), name
        assert spec.layout, name
        if spec.manual:
            assert spec.instructions and spec.instructions.strip(), name
        for f in spec.files:
            assert f.checksum_source.strip(), (name, f.filename)
            if not spec.manual:
                assert f.url and f.url.startswith("http"), (name, f.filename)
    assert reg["coco2017_train"].role == "train" and reg["davis2017_trainval"].role == "benchmark"


def test_registry_error_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "datasets.yaml"
    bad.write_text(
        "version: 1\ndatasets:\n  d:\n    role: benchmark\n    description: x\n    homepage: http://x/\n"
        "    licence: l\n    layout: [D]\n    files:\n      - filename: a.zip\n        url: http://x/a.zip\n"
        "        checksum: md5:1234\n        checksum_source: s\n"
    )
    with pytest.raises(DataError) as err:
        load_registry(bad)
    assert str(bad) in str(err.value) and "datasets.d.files.0.checksum" in str(err.value)
    with pytest.raises(DataError, match="not found"):
        load_registry(tmp_path / "absent.yaml")
