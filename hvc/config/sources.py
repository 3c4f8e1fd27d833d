"""Extracted copies of datasets a lab already has: their layout, their files and what
identifies their content before anything is fetched.

:func:`hvc.data.download.fetch_from` links such a copy into the data root and records a
manifest; :func:`dataset_fingerprint` is the dataset part of the content ids
(:mod:`hvc.config.ids`), kept apart from the download code so that editing that code does
not change the ids of the stages that train on the data.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from hvc.config.datasets import STAMP_NAME, DatasetSpec, resolve_spec
from hvc.io import DataError, read_json

MANIFEST_NAME = ".hvc-manifest.json"


def layout_links(name: str, spec: DatasetSpec, source: Path) -> dict[str, Path]:
    """Which links make ``root/<name>`` show ``source`` in the registry layout.

    Two shapes of ``source`` are accepted: it holds the layout paths as they are (e.g.
    ``DAVIS/JPEGImages/480p``), linked per top folder; or, when every layout path starts
    with the same folder, it is that folder (e.g. a ``/datasets/DAVIS`` holding
    ``JPEGImages/480p``), linked under that folder's name.

    Returns:
        link name inside ``root/<name>`` -> the folder it points to.
    Raises:
        DataError: naming ``source`` and the layout paths missing from it.
    """
    if not source.is_dir():
        raise DataError(source, f"not a folder (given as the existing copy of {name})")
    tops = list(dict.fromkeys(p.split("/")[0] for p in spec.layout))
    missing = [p for p in spec.layout if not (source / p).exists()]
    if not missing:
        return {top: source / top for top in tops}
    if len(tops) == 1 and all("/" in p for p in spec.layout):
        inner = [p.split("/", 1)[1] for p in spec.layout]
        if all((source / p).exists() for p in inner):
            return {tops[0]: source}
    raise DataError(
        source,
        f"does not have the layout of {name}: missing {', '.join(missing)} "
        f"(expected {', '.join(spec.layout)} inside it"
        + (f", or {', '.join(p.split('/', 1)[1] for p in spec.layout)} when it is the {tops[0]} folder itself)" if len(tops) == 1 else ")"),
    )


def walk_files(links: dict[str, Path]) -> dict[str, Path]:
    """Every file under ``links`` (symbolic links inside are followed: the content as the
    readers see it), keyed by its path as seen from the dataset folder
    (``DAVIS/JPEGImages/480p/bear/00000.jpg``), sorted."""
    files = {}
    for link, real in links.items():
        base = Path(real)
        if base.is_file():
            files[link] = base
            continue
        seen: set[tuple[int, int]] = set()  # (device, inode) of the folders on the current path
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True, onerror=_walk_error):
            _refuse_loop(Path(dirpath), base, seen)
            dirnames.sort()
            rel = Path(dirpath).relative_to(base)
            for f in filenames:
                if rel == Path(".") and link == "." and (f in (STAMP_NAME, MANIFEST_NAME) or f.startswith(".hvc-")):
                    continue  # our own files when the dataset is used in place
                key = (Path(link) / rel / f).as_posix().removeprefix("./")
                files[key] = Path(dirpath) / f
    return dict(sorted(files.items()))


def _walk_error(e: OSError) -> None:
    """os.walk's error handler: an unreadable folder is one line naming it."""
    raise DataError(e.filename or "<source>", f"cannot read the folder ({e.strerror or e})")


def _refuse_loop(folder: Path, base: Path, seen: set[tuple[int, int]]) -> None:
    """Raise DataError when ``folder`` (reached through symbolic links) is a folder already
    walked: a link to one of its own parents would make the walk endless."""
    try:
        st = folder.stat()
    except OSError as e:
        raise DataError(folder, f"cannot read the folder ({e.strerror or e})") from None
    key = (st.st_dev, st.st_ino)
    if key in seen:
        raise DataError(folder, f"a symbolic link loop in {base}: this folder is reached again through a link; remove the link")
    seen.add(key)


def stat_file(path: Path) -> os.stat_result:
    """``path.stat()``, a broken or looping link being one line naming it."""
    try:
        return path.stat()
    except OSError as e:
        raise DataError(path, f"cannot read the file ({e.strerror or e}; a broken or looping symbolic link?)") from None


@functools.lru_cache(maxsize=None)
def dataset_fingerprint(name: str, root: str, source: str | None = None) -> dict[str, Any]:
    """What identifies the content of dataset ``name`` as :func:`fetch` or :func:`fetch_from`
    gives it in ``root``, known before fetching (a workflow computes it when it plans its
    jobs, and every stage again when it starts, so it must not change when fetch runs).

    - An extracted copy (``source``, else the folder an earlier :func:`fetch_from` linked or
      adopted in place): the SHA-256 of its file list, (path, size, modification time) of
      every file, sorted: the fields the manifest check (:func:`verify_manifest`) compares
      to decide that nothing changed. A file added, removed, resized or rewritten gives
      another fingerprint; reading the contents is left to ``hvc fetch``, which hashes them.
    - A downloaded dataset: the registry's archives (file name, size, checksum, URL).

    Cached per process: a workflow plans many experiments on one training set.

    Returns:
        a small JSON-able mapping (no absolute path when the copy is readable, so two
        checkouts using the same copy agree).
    """
    spec = resolve_spec(name, None)
    if source is None:
        linked = linked_source(name, root)
        source = str(linked) if linked is not None else None
    if source is None:
        return {"archives": [{"file": f.filename, "size": f.size, "checksum": f.checksum, "url": f.url} for f in spec.files]}
    folder = Path(source).expanduser().resolve()
    target = Path(root) / name
    try:
        in_place = target.exists() and target.resolve() == folder
        files = walk_files({".": folder} if in_place else layout_links(name, spec, folder))
        h = hashlib.sha256()
        for rel, path in files.items():
            st = stat_file(path)
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    except (DataError, OSError) as e:  # `hvc fetch` reports the problem; the plan goes on
        return {"source": str(folder), "unreadable": str(e)[:200]}
    return {"num_files": len(files), "listing_sha256": h.hexdigest()}


def linked_source(name: str, root: str | os.PathLike[str]) -> Path | None:
    """The folder ``root/<name>`` was linked to by :func:`fetch_from`, or None."""
    try:
        stamp = read_json(Path(root) / name / STAMP_NAME)
    except DataError:
        return None
    return Path(stamp["source"]) if isinstance(stamp, dict) and stamp.get("source") else None
