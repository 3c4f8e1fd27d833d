"""Safe extraction of the zip and tar(.gz) archives the datasets come in.

An archive is untrusted input: a member named ``/etc/passwd`` or ``../../x``, a symlink
or hard link pointing outside the target, or a device file could write outside the
dataset folder. Every member is checked before anything is written, and the whole
extraction happens in a temporary folder (:func:`hvc.io.atomic_dir`) that replaces the
target only when every archive extracted and the expected layout is present: a refused
member or a crash leaves no partial output.

For tar archives Python's own ``filter="data"`` (Python >= 3.11.4 / 3.12) runs as a
second line of defence; our check runs first so zip files are covered by the same rules
and the error is a :class:`~hvc.io.DataError` naming the archive and the member.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from hvc.io import DataError, atomic_dir

# Python >= 3.11.4 / 3.12 ships extraction filters (PEP 706); older ones extract without.
_HAS_TAR_FILTER = hasattr(tarfile, "data_filter")
_TAR_FILTER_ERROR: type[Exception] | tuple[()] = getattr(tarfile, "FilterError", ())


def _member_error(archive: Path, member: str, problem: str) -> DataError:
    return DataError(archive, f"refusing member {member!r}: {problem}")


def _check_name(archive: Path, name: str) -> None:
    """Refuse absolute names, drive letters and any ``..`` component."""
    if not name or "\x00" in name:
        raise _member_error(archive, name, "empty or NUL in name")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise _member_error(archive, name, "absolute path")
    if ".." in unified.split("/"):
        raise _member_error(archive, name, "'..' path component (would leave the target folder)")


def _check_link(archive: Path, name: str, link_target: str, *, hard: bool) -> None:
    """Refuse a link whose target is absolute or resolves outside the archive root.

    A symlink's target is relative to the folder holding the link; a tar hard link's
    target is a member name, relative to the archive root.
    """
    kind = "hard link" if hard else "symlink"
    target = link_target.replace("\\", "/")
    if not target or target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        raise _member_error(archive, name, f"{kind} to absolute path {link_target!r}")
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise _member_error(archive, name, f"{kind} to {link_target!r} points outside the target folder")


def _checked_tar_members(tf: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    """Yield tar members one by one after checking each (one pass over a .tar.gz)."""
    for m in tf:
        _check_name(archive, m.name)
        if m.issym():
            _check_link(archive, m.name, m.linkname, hard=False)
        elif m.islnk():
            _check_name(archive, m.linkname)
            _check_link(archive, m.name, m.linkname, hard=True)
        elif not (m.isfile() or m.isdir()):
            raise _member_error(archive, m.name, "device file, FIFO or other special member")
        yield m


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_name(archive, info.filename)
            # Unix file type in the high 16 bits; 0 (no type, e.g. zips made on Windows or
            # by Python's writestr, which stores permission bits only) means a plain file.
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if _zip_is_symlink(info):
                _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
            elif file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _member_error(archive, info.filename, "device file, FIFO or other special member")
        # zipfile writes a symlink entry as a small regular file holding the link text;
        # it never creates links, so the checks above are all that is needed.
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        members = _checked_tar_members(tf, archive)
        try:
            if _HAS_TAR_FILTER:
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tf.extractall(dest, members=members)
        except _TAR_FILTER_ERROR as e:  # the stdlib filter caught what ours let through
            member = e.tarinfo.name if getattr(e, "tarinfo", None) else "?"
            raise _member_error(archive, member, str(e)) from None


def extract_into(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract one zip or tar(.gz/.bz2/.xz) archive into an existing folder, checking every member.

    Not atomic by itself: use :func:`extract_archives` for a target that must appear
    complete or not at all.

    Args:
        archive: the archive file; the format is detected from its content, not its name.
        dest: folder to extract into (created if missing).
    Raises:
        DataError: naming the archive and the member, when a member has an absolute path,
            a ``..`` component, is a symlink or hard link pointing outside ``dest``, or is a
            device file/FIFO; or naming the archive when it is missing, not a zip/tar, or
            corrupt. Members before the refused one may already be in ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(archive, "archive not found")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest)
        else:
            raise DataError(archive, "not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(archive, f"corrupt or truncated archive ({e})") from None
    except OSError as e:
        if e.errno is not None:  # a real I/O error (disk full, permissions): not the archive's fault
            raise
        raise DataError(archive, f"corrupt or truncated archive ({e})") from None  # e.g. gzip.BadGzipFile


def extract_archives(
    archives: Sequence[str | os.PathLike[str]],
    target: str | os.PathLike[str],
    *,
    required: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Extract archives into ``target`` atomically; the folder appears only when complete.

    All archives are extracted, in order, into one temporary folder beside ``target``
    (:func:`hvc.io.atomic_dir`), the ``required`` paths are checked, and only then is the
    folder renamed to ``target``.

    Args:
        archives: zip or tar(.gz) files, extracted in this order into the same folder.
        target: the folder to create.
        required: paths relative to ``target`` that must exist after extraction (the
            dataset's expected layout, e.g. ``DAVIS/JPEGImages/480p``).
        overwrite: replace an existing ``target``. When False (the default) an existing
            ``target`` is returned untouched: it can only exist complete, since it is
            created by an atomic rename, so a second call is a no-op.
    Returns:
        ``target``.
    Raises:
        DataError: a member is unsafe (see :func:`extract_into`), an archive is missing or
            corrupt, or a ``required`` path is missing afterwards (naming the archives and
            the path). In every case ``target`` is left as it was.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        return target
    names = ", ".join(Path(a).name for a in archives)
    with atomic_dir(target) as tmp:
        for archive in archives:
            extract_into(archive, tmp)
        missing = [p for p in required if not (tmp / p).exists()]
        if missing:
            raise DataError(
                target,
                f"after extracting {names}, expected {', '.join(missing)} to exist; "
                f"the archive holds: {', '.join(sorted(x.name for x in tmp.iterdir())) or '(nothing)'}",
            )
    return target
