"""Get the datasets: registry, resumable download, verification, safe extraction.

The registry (``hvc/config/datasets.yaml``) lists, per dataset, the archive files with URL,
size and checksum (and where each checksum came from), the licence, and the folders that
must exist after extraction. :func:`fetch` turns one registry entry into a verified,
extracted folder::

    root/downloads/<name>/<file>       archives as downloaded (kept: re-extraction needs no network)
    root/downloads/<name>/<file>.part  an interrupted download, resumed by the next call
    root/<name>/                       the extracted dataset, created by one atomic rename
    root/<name>/.hvc-fetch.json        stamp: what was verified; a later call with the same
                                       registry entry returns at once, without any request

Tools, and why some of this is our own code
-------------------------------------------
* HTTP: ``requests`` with ``urllib3``'s :class:`~urllib3.util.Retry` mounted on the session
  (connection errors and 408/429/5xx answers, exponential backoff, ``Retry-After``). The
  same ``Retry`` object also bounds and paces our resume loop (:meth:`Retry.increment`,
  :meth:`Retry.get_backoff_time`), so there is one retry policy.
* Progress bar: ``tqdm``. Hashes: :mod:`hashlib` through :func:`hvc.io.file_digests`, the
  SHA-256 (always computed and stamped) and the md5/sha1 that some datasets publish in the
  same single read of the file (an 18 GiB archive is read once).
* Resuming a partial download is ours: ``pooch`` (retries, hashes, progress) opens its
  output with ``"w+b"`` in a temporary file that is deleted on failure, so every retry
  restarts from byte 0 (pooch 1.9, ``HTTPDownloader.__call__``/``stream_download``); an
  interruption late in the 18 GiB COCO archive would start it over. ``requests``/``urllib3``
  retry whole requests only and never resume a body. So :func:`download` keeps a ``.part``
  file, asks for the rest with ``Range: bytes=N-`` (and ``If-Range`` with the first answer's
  validator, so a file changed on the server is fetched anew rather than spliced), appends on
  ``206``, restarts on ``200`` (server ignored Range), and handles ``416``.
* Extraction: :mod:`hvc.data.extract` (member checks + atomic folder), not pooch's Unzip/Untar.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util import Retry

from hvc.data.extract import extract_archives
from hvc.config.sources import (  # noqa: F401 (re-exported)
    MANIFEST_NAME,
    dataset_fingerprint,
    layout_links as _layout_links,
    linked_source,
    stat_file as _stat,
    walk_files as _walk_files,
)
from hvc.config.datasets import REGISTRY_PATH, STAMP_NAME, DatasetSpec, FileSpec, dataset_rows, load_registry, resolve_spec  # noqa: F401 (re-exported)
from hvc.io import DataError, atomic_dir, check_outputs_apart, file_digests, read_json, write_json

log = logging.getLogger(__name__)

DOWNLOADS_DIR = "downloads"

# One retry policy for the whole module: the session's adapter uses it for connection
# errors and retryable statuses, the resume loop in download() for interrupted bodies.
# urllib3 sleeps backoff_factor * 2**(n-1) before the n-th consecutive retry (none before
# the first), capped at 120 s; the resume loop waits at least backoff_factor every time.
DEFAULT_RETRY = Retry(
    total=10,
    connect=5,
    read=5,
    status=5,
    backoff_factor=1.0,
    status_forcelist=(408, 429, 500, 502, 503, 504),
    allowed_methods=frozenset({"GET", "HEAD"}),
    respect_retry_after_header=True,
    raise_on_status=True,
)
TIMEOUT = (30, 120)  # seconds: connect, between bytes
CHUNK = 1 << 20



class ManualDownloadRequired(DataError):
    """A file that cannot be downloaded automatically (registration) is not in place yet."""


# --------------------------------------------------------------------------- verification


def verify_file(path: str | os.PathLike[str], size: int | None, checksum: str | None, source: str | None = None) -> str:
    """Check a file's size and checksum against the registry.

    Args:
        path: the file.
        size: expected size in bytes, or None (not checked).
        checksum: ``"md5:<hex>"``, ``"sha1:<hex>"`` or ``"sha256:<hex>"``, or None (not checked).
        source: where the expected values come from, quoted in the error.
    Returns:
        the file's SHA-256 (hex), computed in every case so it can be stamped and, where the
        registry has no checksum yet, copied into it.
    Raises:
        DataError: naming the file, with expected and actual values, when the size or the
            checksum differ, or when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    cited = f" (expected values from: {source})" if source else ""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise DataError(path, f"size mismatch: expected {size} bytes, actual {actual_size} bytes{cited}")
    alg, expected = checksum.split(":", 1) if checksum is not None else ("sha256", "")
    digests = file_digests(path, ("sha256", alg))  # one pass over the file for both
    sha256 = digests["sha256"]
    if checksum is not None:
        actual = digests[alg]
        if actual.lower() != expected.lower():
            raise DataError(path, f"{alg} checksum mismatch: expected {checksum}, actual {alg}:{actual}{cited}")
    return sha256


# --------------------------------------------------------------------------- HTTP with resume


class _Interrupted(Exception):
    """The body ended before the announced length (retried like a dropped connection)."""


def _session(retry: Retry) -> requests.Session:
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    # identity: the bytes on disk must be the archive's bytes, and Range offsets count them
    s.headers.update({"User-Agent": "hvc-dataset-fetch", "Accept-Encoding": "identity"})
    return s


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` -> (100, 1000); ``"bytes */1000"`` -> (None, 1000)."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _validator_of(r: requests.Response) -> str | None:
    etag = r.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return etag
    return r.headers.get("Last-Modified")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    progress: bool = True,
    retry: Retry | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming an earlier partial download.

    Bytes go to ``dest + ".part"``; an interrupted transfer (dropped connection, timeout,
    short body) is resumed from the ``.part`` size with ``Range: bytes=N-``, also by a
    later call after a crash. ``dest`` appears (atomic rename) only when the transfer is
    complete. Content is not verified here: see :func:`verify_file`.

    Args:
        url: http(s) URL.
        dest: final path of the file.
        size: expected size in bytes, if known; a server announcing another size is an
            error before any byte is written, and a ``.part`` already this long is renamed
            without a request.
        progress: show a tqdm progress bar on stderr.
        retry: retry policy (defaults to :data:`DEFAULT_RETRY`). Every failed attempt
            counts and is followed by a backoff pause (at least ``backoff_factor`` seconds,
            doubling with each consecutive failure); the count is reset only when the
            ``.part`` file grew past the largest size it had in this call, so a server that
            drops the connection and ignores Range (restarting at byte 0 with 200), or
            announces more bytes than it sends, exhausts the retries instead of looping.
    Returns:
        ``dest``.
    Raises:
        DataError: naming ``dest`` and the URL for an HTTP error (404, 403, ...), a size
            that differs from ``size``, or when retries are exhausted (the ``.part`` file is
            kept, so the next call resumes).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")  # the validator for If-Range across runs
    policy = attempt_policy = retry if retry is not None else DEFAULT_RETRY
    high_water = part.stat().st_size if part.exists() else 0  # the most bytes the .part file held
    with _session(policy) as session:
        while True:
            try:
                _attempt(session, url, dest, part, meta, size, progress)
                break
            except requests.RequestException as e:
                # raised by session.get/raise_for_status: an HTTP error status, or the
                # adapter already spent its retries on connecting / retryable statuses
                kept = part.stat().st_size if part.exists() else 0
                resumes = f"; {kept} bytes kept in {part.name}, the next call resumes" if kept else ""
                raise DataError(dest, f"GET {url} failed: {e}{resumes}") from None
            except (urllib3.exceptions.HTTPError, _Interrupted) as e:
                # the body broke off (ProtocolError, ReadTimeoutError from r.raw.stream, or
                # fewer bytes than announced), or the server answered a Range request
                # unusably: ask again for the rest, after a pause
                attempt_policy, high_water = _pause_before_retry(policy, attempt_policy, high_water, e, url, dest, part)
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
    return dest


def _attempt(
    session: requests.Session, url: str, dest: Path, part: Path, meta: Path, size: int | None, progress: bool
) -> None:
    """One request for the bytes of ``url`` that ``part`` lacks, appended to it (or
    written anew); returns when ``part`` holds the whole file.

    Raises:
        requests.RequestException: an HTTP error status, or the adapter's retries spent.
        urllib3.exceptions.HTTPError, _Interrupted: the body broke off or ended short, or
            the server answered the Range request unusably (to be retried).
        DataError: the server's size differs from ``size``, or it sent more than it announced.
    """
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        log.warning("%s is longer than the expected %d bytes; downloading again", part, size)
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    with session.get(url, headers=_range_headers(meta, url, have), stream=True, timeout=TIMEOUT) as r:
        plan = _answer_plan(r, url, dest, part, meta, have, size)
        if plan is None:
            return  # the .part file already holds the whole file
        mode, have, total = plan
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            # raw bytes, never content-decoded (see Accept-Encoding above)
            for chunk in r.raw.stream(CHUNK, decode_content=False):
                f.write(chunk)
                bar.update(len(chunk))
    done = part.stat().st_size
    if total is not None and done < total:
        raise _Interrupted(f"body ended at byte {done} of {total}")
    if total is not None and done > total:
        part.unlink()
        raise DataError(dest, f"{url} sent {done} bytes, more than the announced {total}")


def _range_headers(meta: Path, url: str, have: int) -> dict[str, str]:
    """Request headers asking for the bytes after the first ``have``, with ``If-Range``
    set to the validator that ``meta`` recorded for ``url`` (if any)."""
    if not have:
        return {}
    try:
        saved = read_json(meta)
        validator = saved.get("validator") if saved.get("url") == url else None
    except DataError:
        validator = None
    headers = {"Range": f"bytes={have}-"}
    if validator:
        headers["If-Range"] = validator
    return headers


def _answer_plan(
    r: requests.Response, url: str, dest: Path, part: Path, meta: Path, have: int, size: int | None
) -> tuple[str, int, int | None] | None:
    """How to take the server's answer to a request for the bytes after the first ``have``.

    Returns:
        None when ``part`` already holds the whole file (416 naming that size); otherwise
        (file mode: ``"ab"`` to append a 206 range, ``"wb"`` for a whole body, bytes kept,
        total size or None when unknown). A whole body's validator is recorded in ``meta``.
    Raises:
        requests.HTTPError: an error status.
        _Interrupted: the server refused the range or resumed at another byte (``part``
            is deleted: downloaded again).
        DataError: the announced size differs from ``size``.
    """
    if r.status_code == 416:
        _, total = _parse_content_range(r.headers.get("Content-Range"))
        if total is not None and have == total:
            return None
        part.unlink(missing_ok=True)
        raise _Interrupted(f"server refused Range bytes={have}- (416); downloading again")
    r.raise_for_status()
    if have and r.status_code == 206:
        start, total = _parse_content_range(r.headers.get("Content-Range"))
        if start != have:
            part.unlink(missing_ok=True)
            raise _Interrupted(f"server resumed at byte {start}, not {have}; downloading again")
        mode = "ab"
    else:  # 200: a full body, first request or server ignoring Range
        if have:
            log.info("%s: server sent the whole file instead of a range; restarting", url)
        have, mode = 0, "wb"
        length = r.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    if total is not None and size is not None and total != size:
        raise DataError(dest, f"{url} offers {total} bytes but the registry expects {size} bytes")
    if mode == "wb":
        write_json(meta, {"url": url, "validator": _validator_of(r)})
    return mode, have, total if total is not None else size


def _pause_before_retry(
    policy: Retry, attempt_policy: Retry, high_water: int, error: Exception, url: str, dest: Path, part: Path
) -> tuple[Retry, int]:
    """Count a failed attempt and sleep the backoff (at least ``backoff_factor`` seconds).

    The count (``attempt_policy``) restarts from ``policy`` when the ``.part`` file grew
    past ``high_water``, the most bytes it held: only consecutive fruitless attempts count.

    Returns:
        the updated attempt policy and high-water mark.
    Raises:
        DataError: retries exhausted (the ``.part`` file is kept for the next call).
    """
    done = part.stat().st_size if part.exists() else 0
    if done > high_water:  # real progress
        high_water, attempt_policy = done, policy
    try:
        attempt_policy = attempt_policy.increment(method="GET", url=url, error=error)
    except (urllib3.exceptions.HTTPError, _Interrupted):  # MaxRetryError, or retries disabled
        raise DataError(
            dest,
            f"GET {url} failed after retries ({error}); {done} bytes kept in {part.name}, next call resumes",
        ) from None
    pause = max(attempt_policy.get_backoff_time(), attempt_policy.backoff_factor)
    log.warning("%s: %s; resuming from byte %d in %.1f s", url, error, done, pause)
    time.sleep(pause)
    return attempt_policy, high_water


# --------------------------------------------------------------------------- fetch


def _manual_message(name: str, spec: DatasetSpec, missing: list[tuple[FileSpec, Path]]) -> str:
    lines = [f"Dataset {name!r} must be downloaded by hand (registration or click-through needed)."]
    lines += ["  " + line for line in (spec.instructions or "").strip().splitlines()]
    lines.append("  Missing file(s):")
    for f, path in missing:
        lines.append(f"    - {f.filename}")
        lines.append(f"        get it from: {f.url or spec.homepage}")
        lines.append(f"        put it at:   {path}")
        lines.append(
            f"        expected:    size {f.size if f.size is not None else 'unknown'}, "
            f"checksum {f.checksum or 'unknown'}"
        )
    lines.append("  Then run the same command again: the files are verified and extracted.")
    return "\n".join(lines)


def _stamp_is_current(stamp_path: Path, spec: DatasetSpec, target: Path) -> bool:
    try:
        stamp = read_json(stamp_path)
    except DataError:
        return False
    recorded = {f.get("filename"): f for f in stamp.get("files", []) if isinstance(f, dict)}
    if set(recorded) != {f.filename for f in spec.files}:
        return False
    for f in spec.files:
        r = recorded[f.filename]
        if f.size is not None and r.get("size") != f.size:
            return False
        if f.checksum is not None and f.checksum not in (r.get("checksum"), f"sha256:{r.get('sha256')}"):
            return False
    return all((target / p).exists() for p in spec.layout)


def fetch(
    name: str,
    root: str | os.PathLike[str],
    progress: bool = True,
    *,
    registry: Mapping[str, DatasetSpec | Mapping[str, Any]] | None = None,
    retry: Retry | None = None,
) -> Path:
    """Download (or take the hand-placed files of), verify and extract one dataset.

    Steps: if ``root/<name>/.hvc-fetch.json`` matches the registry entry and the layout
    folders exist, return at once (no request, no hashing). Otherwise, for each file of
    the entry: use ``root/downloads/<name>/<file>`` if present, else download it (resuming
    a ``.part``), or for manual datasets print where to get it and where to put it and
    raise; verify size and checksum; then extract all files into ``root/<name>`` atomically,
    check the layout, and write the stamp.

    Args:
        name: registry key, e.g. ``"davis2017_trainval"``.
        root: data folder (``data.root`` in params.yaml).
        progress: show download progress bars.
        registry: entries to use instead of the packaged registry (name -> DatasetSpec or
            a plain dict with the same keys); tests point these at a local server.
        retry: HTTP retry policy (default :data:`DEFAULT_RETRY`).
    Returns:
        ``root/<name>``, the extracted dataset; ``spec.layout`` paths exist inside it.
    Raises:
        ManualDownloadRequired: a manual dataset's file is not in place (the message, also
            printed to stderr, says what to download from where and where to put it).
        DataError: unknown dataset or invalid entry; download failure; size or checksum
            mismatch (naming the file, expected and actual; a file downloaded by this call
            is renamed ``<file>.rejected``, a hand-placed one is left as is); unsafe archive
            member, corrupt archive or missing layout (an archive downloaded by this call
            without a registry checksum is renamed ``<file>.rejected`` so the next call
            downloads it again; otherwise the message names the file(s) to delete).
            No extracted output is left behind in these cases.
    """
    spec = resolve_spec(name, registry)
    root = Path(root)
    target = root / name
    stamp_path = target / STAMP_NAME
    if _stamp_is_current(stamp_path, spec, target):
        return target
    archive_dir = root / DOWNLOADS_DIR / name
    paths = [(f, archive_dir / f.filename) for f in spec.files]
    _require_manual_files(name, spec, paths, archive_dir)
    records, fresh = _get_and_verify(paths, progress, retry)
    try:
        extract_archives([p for _, p in paths], target, required=spec.layout, overwrite=True)
    except DataError as e:
        raise _unusable_archive(e, paths, fresh) from None
    write_json(stamp_path, {"dataset": name, "files": records, "layout": list(spec.layout)})
    _warn_unchecked(spec, records, archive_dir, stamp_path)
    return target


def _warn_unchecked(spec: DatasetSpec, records: list[dict[str, Any]], archive_dir: Path, stamp_path: Path) -> None:
    """Log, for each file without a registry checksum, the SHA-256 the stamp recorded."""
    for f, r in zip(spec.files, records):
        if f.checksum is None:  # now true: the stamp holds it
            log.warning(
                "%s: no checksum in the registry, verified size only; its sha256 %s is recorded in %s "
                "(add 'sha256:%s' to hvc/config/datasets.yaml once confirmed)",
                archive_dir / f.filename, r["sha256"], stamp_path, r["sha256"],
            )  # fmt: skip


def _require_manual_files(name: str, spec: DatasetSpec, paths: list[tuple[FileSpec, Path]], archive_dir: Path) -> None:
    """Raise :class:`ManualDownloadRequired` (message also printed to stderr) when a file
    that must be placed by hand (manual dataset, or no URL) is not at its path yet;
    ``archive_dir`` is created for the user to drop it in."""
    missing_manual = [(f, p) for f, p in paths if not p.exists() and (spec.manual or not f.url)]
    if missing_manual:
        archive_dir.mkdir(parents=True, exist_ok=True)
        message = _manual_message(name, spec, missing_manual)
        print(message, file=sys.stderr)
        raise ManualDownloadRequired(missing_manual[0][1], message)


def _get_and_verify(
    paths: list[tuple[FileSpec, Path]], progress: bool, retry: Retry | None
) -> tuple[list[dict[str, Any]], set[Path]]:
    """Download each file not at its path yet and verify every one (see :func:`fetch`).

    Returns:
        the stamp record of each file and the set of paths downloaded by this call.
    Raises:
        DataError: download failure, or size or checksum mismatch (a file downloaded by
            this call is renamed ``<file>.rejected``, a hand-placed one is left as is).
    """
    records = []
    fresh: set[Path] = set()  # downloaded by this call
    for f, path in paths:
        downloaded_now = False
        if not path.exists():
            assert f.url is not None  # guaranteed by the manual check
            download(f.url, path, size=f.size, progress=progress, retry=retry)
            downloaded_now = True
        try:
            sha256 = verify_file(path, f.size, f.checksum, source=f.checksum_source)
        except DataError as e:
            if downloaded_now:  # set aside, not deleted: the registry value may be the wrong one
                rejected = path.with_name(path.name + ".rejected")
                os.replace(path, rejected)
                raise DataError(
                    path, f"{e.problem}; the download was moved to {rejected.name} (inspect or delete it)"
                ) from None
            raise DataError(path, f"{e.problem}; delete or replace the file, then run again") from None
        if downloaded_now:
            fresh.add(path)
        records.append({"filename": f.filename, "url": f.url, "size": path.stat().st_size, "checksum": f.checksum, "sha256": sha256})
    return records, fresh


def _unusable_archive(e: DataError, paths: list[tuple[FileSpec, Path]], fresh: set[Path]) -> DataError:
    """The error for archives that passed verification but do not extract (or lack the
    layout), saying how the next run gets past it.

    A file downloaded by this call without a registry checksum (nothing could catch a bad
    download earlier) is moved aside to ``<file>.rejected``, so the next run downloads it
    again; otherwise the message names the file(s) to delete or replace.
    """
    named = [(f, p) for f, p in paths if str(p) == e.path]
    suspects = named or [(f, p) for f, p in paths if f.checksum is None] or paths
    moved = []
    for f, path in suspects:
        if path in fresh and f.checksum is None:
            rejected = path.with_name(path.name + ".rejected")
            os.replace(path, rejected)
            moved.append(rejected.name)
    if moved:
        return DataError(e.path, f"{e.problem}; the download was moved to {', '.join(moved)} (inspect or delete it), the next run downloads it again")
    files = ", ".join(str(p) for _, p in suspects)
    return DataError(e.path, f"{e.problem}; delete or replace {files}, then run again")


# --------------------------------------------------------------------------- folders a lab already has



def _content_hash(entries: list[dict[str, Any]]) -> str:
    """SHA-256 over the sorted (path, size, sha256) lines: one number for the whole content."""
    import hashlib

    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e['path']}\t{e['size']}\t{e['sha256']}\n".encode())
    return h.hexdigest()


def write_manifest(name: str, dataset_dir: Path, links: dict[str, Path], source: Path, progress: bool = True) -> dict[str, Any]:
    """Hash every file of an existing dataset folder and write ``<dataset_dir>/.hvc-manifest.json``.

    The manifest lists each file (path as seen from ``dataset_dir``, size in bytes,
    modification time in ns, SHA-256) and a content hash over all of them.

    Returns:
        the manifest.
    """
    files = _walk_files(links)
    entries = []
    for rel, path in tqdm(files.items(), desc=f"hash {name}", unit="file", disable=not progress, mininterval=2.0):
        st = _stat(path)
        entries.append({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_digests(path)["sha256"]})
    manifest = {
        "dataset": name,
        "source": str(source),
        "num_files": len(entries),
        "bytes": sum(e["size"] for e in entries),
        "content_sha256": _content_hash(entries),
        "files": entries,
    }
    write_json(dataset_dir / MANIFEST_NAME, manifest)
    return manifest


def verify_manifest(dataset_dir: Path, links: dict[str, Path], rehash: bool = False) -> dict[str, Any]:
    """Check an existing dataset folder against the manifest written the first time.

    Every call compares the file list and sizes (no reading of file contents); a file
    whose modification time changed is hashed again, and with ``rehash`` every file is.

    Returns:
        the manifest.
    Raises:
        DataError: naming the first file missing, added, resized or with other content
            than when the manifest was written (and the manifest, to rebuild it on purpose:
            delete it and run again).
    """
    manifest_path = dataset_dir / MANIFEST_NAME
    manifest = read_json(manifest_path)
    recorded = _manifest_entries(manifest, manifest_path)
    files = _walk_files(links)
    hint = f"; if this change is intended, delete {manifest_path} and run again to record the new content"
    missing = [p for p in recorded if p not in files]
    if missing:
        raise DataError(dataset_dir / missing[0], f"listed in the manifest but missing ({len(missing)} file(s) missing){hint}")
    added = [p for p in files if p not in recorded]
    if added:
        raise DataError(files[added[0]], f"not in the manifest: the dataset gained {len(added)} file(s){hint}")
    for rel, path in files.items():
        st, entry = _stat(path), recorded[rel]
        if st.st_size != entry["size"]:
            raise DataError(path, f"size {st.st_size} bytes, the manifest says {entry['size']}{hint}")
        if rehash or st.st_mtime_ns != entry["mtime_ns"]:
            if file_digests(path)["sha256"] != entry["sha256"]:
                raise DataError(path, f"content differs from the manifest (sha256 {entry['sha256'][:12]}...){hint}")
    return manifest


def _manifest_entries(manifest: Any, path: Path) -> dict[str, dict[str, Any]]:
    """{path: entry} of a manifest, every entry with its path, size, mtime_ns and sha256.

    Raises:
        DataError: naming the manifest and what is wrong, and saying to delete it.
    """
    fix = f"; delete {path} and run again to hash the dataset anew"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise DataError(path, f"not a manifest of `hvc fetch --from` (expected a mapping with a list of files){fix}")
    types = {"path": str, "size": int, "mtime_ns": int, "sha256": str}
    recorded = {}
    for n, entry in enumerate(files):
        bad = [k for k, t in types.items() if not isinstance(entry, dict) or not isinstance(entry.get(k), t)]
        if bad:
            raise DataError(path, f"file entry {n} lacks {', '.join(bad)} (or has another type){fix}")
        recorded[entry["path"]] = entry
    return recorded


def fetch_from(
    name: str,
    root: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    rehash: bool = False,
    progress: bool = True,
    registry: Mapping[str, DatasetSpec | Mapping[str, Any]] | None = None,
) -> Path:
    """Use a copy of dataset ``name`` that is already extracted (e.g. on a lab's shared disk).

    Checks that ``source`` has the registry layout (see :func:`_layout_links`), makes
    ``root/<name>`` a folder of symbolic links into it (nothing is copied; when ``source``
    is ``root/<name>`` itself it is used in place), writes a manifest of every file (path,
    size, SHA-256, and a content hash over all) the first time and checks the folder
    against it on every later call (:func:`verify_manifest`), then writes the same stamp
    file as :func:`fetch` (``root/<name>/.hvc-fetch.json``, the workflow's ``fetch`` output).

    Args:
        name: registry key, e.g. ``"davis2017_trainval"``.
        root: data folder (``data.root``).
        source: the existing dataset folder.
        rehash: hash every file again instead of only the changed ones.
        progress: progress bar while hashing.
        registry: as in :func:`fetch`.
    Returns:
        ``root/<name>``.
    Raises:
        DataError: unknown dataset; ``source`` missing or without the layout; ``root/<name>``
            already holds another copy (a download, or links to another folder with a
            manifest that does not match); the folder no longer matches its manifest.
    """
    spec = resolve_spec(name, registry)
    root, source = Path(root), Path(source).expanduser().resolve()
    target = root / name
    in_place = target.exists() and target.resolve() == source
    if not in_place:  # links inside the source would be walked as part of it, endlessly
        check_outputs_apart(target, {"--from": source}, "--root")
    links = {".": source} if in_place else _layout_links(name, spec, source)
    if in_place:
        missing = [p for p in spec.layout if not (source / p).exists()]
        if missing:
            raise DataError(source, f"does not have the layout of {name}: missing {', '.join(missing)}")
    stamp = _link_stamp(name, target, source, in_place)
    if stamp is not None and stamp.get("source") == str(source) and (target / MANIFEST_NAME).exists():
        verify_manifest(target, links, rehash=rehash)
        return target
    before = _recorded_content(target)
    if not in_place:
        with atomic_dir(target) as tmp:
            for link, real in links.items():
                (tmp / link).symlink_to(real, target_is_directory=real.is_dir())
    manifest = write_manifest(name, target, links, source, progress=progress)
    if before is not None and before != (manifest["num_files"], manifest["content_sha256"]):
        log.warning(
            "%s: the content changed since the last fetch (%d files before, %d now); recorded the new content",
            name, before[0], manifest["num_files"],
        )  # fmt: skip
    _write_link_stamp(name, spec, target, source, in_place, manifest)
    return target


def _recorded_content(target: Path) -> tuple[int, str] | None:
    """(number of files, content hash) of the manifest an earlier run left in ``target``, if any."""
    try:
        manifest = read_json(target / MANIFEST_NAME)
    except DataError:
        return None
    if not isinstance(manifest, dict):
        return None
    return manifest.get("num_files"), manifest.get("content_sha256")


def _write_link_stamp(name: str, spec: DatasetSpec, target: Path, source: Path, in_place: bool, manifest: dict[str, Any]) -> None:
    """Write the stamp of :func:`fetch_from` (``target/.hvc-fetch.json``) from the manifest."""
    write_json(
        target / STAMP_NAME,
        {
            "dataset": name,
            "source": str(source),
            "linked": not in_place,
            "layout": list(spec.layout),
            "manifest": MANIFEST_NAME,
            "num_files": manifest["num_files"],
            "bytes": manifest["bytes"],
            "content_sha256": manifest["content_sha256"],
        },
    )
    log.info("%s: %d files, %d bytes from %s, content sha256 %s", name, manifest["num_files"], manifest["bytes"], source, manifest["content_sha256"])


def _link_stamp(name: str, target: Path, source: Path, in_place: bool) -> dict[str, Any] | None:
    """The stamp of an earlier :func:`fetch_from` of ``source`` into ``target``, or None
    (no readable stamp, or one for another source, which is relinked).

    Raises:
        DataError: ``target`` holds something other than our links or an empty folder (a
            downloaded copy) while ``source`` is not ``target`` itself.
    """
    stamp_path = target / STAMP_NAME
    try:
        stamp = read_json(stamp_path) if stamp_path.exists() else None
    except DataError:
        stamp = None
    if not isinstance(stamp, dict):
        stamp = None
    empty = target.is_dir() and not target.is_symlink() and not any(target.iterdir())  # e.g. made by Snakemake for the stamp
    if not in_place and target.exists() and not empty:
        if stamp is not None and stamp.get("linked") is False:
            raise DataError(
                target,
                f"holds the data of {name} itself (adopted in place from {stamp.get('source')}, not linked): linking "
                f"{source} would replace it; to use {source}, first move {target} away (e.g. to {target}.own); "
                f"to keep using it, run `hvc fetch {name} --from {target}`",
            )
        if stamp is None and _only_links(target):
            log.warning("%s: links without a stamp, left by an interrupted `hvc fetch --from`; linking again", target)
            return None
        if stamp is None or "source" not in stamp:
            raise DataError(
                target,
                f"already holds a copy of {name} (downloaded or extracted there); to link {source} instead, "
                "move that copy away; to use it as it is, pass it as the source",
            )
        if stamp["source"] != str(source):
            log.info("%s: linked to %s before; linking %s now", target, stamp["source"], source)
            stamp = None
    return stamp


def _only_links(target: Path) -> bool:
    """Whether ``target`` (a folder) holds nothing but symbolic links and our own
    ``.hvc-*`` files: what :func:`fetch_from` makes before it writes the stamp, so such a
    folder without a stamp is an interrupted link run (no data is lost by linking again)."""
    if target.is_symlink() or not target.is_dir():
        return False
    return all(e.is_symlink() or e.name.startswith(".hvc-") for e in target.iterdir())
