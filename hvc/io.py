"""The one place where files are read and written: images, masks, JSON, atomic outputs.

Every output of the pipeline goes through :func:`atomic_path` or :func:`atomic_dir`:
the content is written under a temporary name beside the target and renamed into place
only when complete, so a stage killed at any point leaves either its complete previous
output or none.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data: the message names the file and the problem.

    Raised as ``DataError(path, problem)``; the message is ``"<path>: <problem>"``.
    ``DataError(message)`` rebuilds one from that message alone, which is how pickling
    and torch's DataLoader re-raise an exception from a worker process (they call the
    class with one string; for the DataLoader that string is the worker's traceback, whose
    last ``DataError:`` line holds the message). So a bad sample met in a loader worker
    still reaches the CLI as a DataError, one line naming the file, not a RuntimeError.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str | None = None):
        if problem is None:
            path, problem = _split_message(str(path))
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _split_message(message: str) -> tuple[str, str]:
    """(path, problem) of a DataError message, or of a traceback text ending in one."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    if len(lines) > 1:  # a traceback: take its last "...DataError: <message>" line
        for line in reversed(lines):
            head, sep, tail = line.partition("DataError: ")
            if sep and not head.startswith(" "):
                message = tail
                break
    path, sep, problem = message.partition(": ")
    return (path, problem) if sep else ("<input>", message)


# --------------------------------------------------------------------------- atomic output


def _temp_prefix(target: Path) -> str:
    """``.<name>.<pid>@<host>.``: temporary names say which process made them. A long
    name is shortened (its start and a hash of it), so that the temporary's name stays
    within the file system's limit (255 bytes) whenever the output's own name does."""
    name = target.name
    if len(name.encode()) > 120:
        name = name[:60] + "~" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return f".{name}.{os.getpid()}@{socket.gethostname()}."


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """Turn a failure to create the temporary beside ``target``, or to rename it into
    place, into one line naming ``target``: no permission to write the folder, a name
    longer than the file system allows, a read-only or full disk."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(target) else ""
        raise OutputError(target, f"cannot write the output: {e.strerror or e}{where}") from None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # Linux: state is the field after "(comm)"
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries in ``folder`` that killed processes of this host left.

    A process killed with SIGKILL (out of memory, a cluster's time limit, ``kill -9``)
    cannot clean up: its half-written ``.<name>.<pid>@<host>.<random>.tmp`` file or folder
    stays beside the target (gigabytes, for a shard folder). Those whose process no longer
    runs on this host are removed; those of live processes, or of other hosts sharing the
    filesystem, are left alone.

    Returns:
        the paths removed.
    """
    ours = re.compile(rf"^\..+\.(\d+)@{re.escape(socket.gethostname())}\.[a-z0-9_]+\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = ours.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


_SWEPT: set[str] = set()  # folders this process has already cleaned


def _prepare_folder(folder: Path) -> None:
    """Create ``folder``; the first time this process writes there, remove stale temporaries."""
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key not in _SWEPT:
        _SWEPT.add(key)
        remove_stale_temporaries(folder)


class OutputError(DataError):
    """An output cannot be written (no space left, read-only or over-quota filesystem);
    the message names the output path."""


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def _output_error(e: BaseException, target: Path, tmp: Path) -> OutputError | None:
    """The one-line error naming ``target`` for a disk-full (or read-only, over-quota)
    failure while writing it, else None. A failure reported for a path inside ``tmp``
    (a nested atomic write) is reported for the same path inside ``target``."""
    if isinstance(e, OutputError):
        path = e.path
        if path == str(tmp) or path.startswith(str(tmp) + os.sep):
            return OutputError(str(target) + path[len(str(tmp)) :], e.problem)
        return None
    if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
        return OutputError(target, f"cannot write the output: {e.strerror or os.strerror(e.errno)}")
    return None


def current_umask() -> int:
    """The process's file-mode creation mask (read from /proc on Linux, else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _public_mode(path: Path, directory: bool) -> None:
    """Give a temporary (created private: 0600/0700) the mode a plain ``open``/``mkdir``
    would have given the output: 0666/0777 less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    The temporary file lives in the target's folder so the final ``os.replace`` is an
    atomic rename on the same filesystem. Temporaries left there by killed processes are
    removed first (:func:`remove_stale_temporaries`). The output's mode follows the
    umask (0666 less the umask), as a file opened for writing would.

    Raises:
        OutputError: naming ``target`` when the disk is full (or read-only, over quota).
    """
    target = Path(target)
    with _writing(target):
        _prepare_folder(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _public_mode(tmp_path, directory=False)
        with _writing(target):
            os.replace(tmp_path, target)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        error = _output_error(e, target, tmp_path)
        if error is not None:
            raise error from None
        raise


# name -> text of files every folder written by atomic_dir inside a `sidecar_files` block gets
_SIDECARS: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("hvc_sidecars", default={})


@contextlib.contextmanager
def sidecar_files(files: dict[str, str]) -> Iterator[None]:
    """Within this block, every folder :func:`atomic_dir` writes also gets these files
    (name → UTF-8 text), written into the temporary folder before it is renamed into place,
    so an output folder never exists without them. A stage uses it to put the record of
    its parameters beside its outputs (``params.yaml``) without each writer knowing of it;
    a file the writer made itself under the same name is kept."""
    token = _SIDECARS.set({**_SIDECARS.get(), **files})
    try:
        yield
    finally:
        _SIDECARS.reset(token)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` (a folder) on success.

    A previous ``target`` is removed only after the new content is complete; on any
    exception the temporary folder is deleted and ``target`` is untouched. Temporaries
    left beside it by killed processes are removed first (:func:`remove_stale_temporaries`).
    The folder's mode follows the umask (0777 less the umask), as ``mkdir`` would.

    Raises:
        OutputError: naming ``target`` (or the file inside it) when the disk is full
            (or read-only, over quota).
    """
    target = Path(target)
    prefix = _temp_prefix(target)
    with _writing(target):
        _prepare_folder(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for name, text in _SIDECARS.get().items():
            if not (tmp / name).exists():
                (tmp / name).write_text(text, encoding="utf-8")
        _public_mode(tmp, directory=True)
        with _writing(target):
            _replace_dir(tmp, target, prefix)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        error = _output_error(e, target, tmp)
        if error is not None:
            raise error from None
        raise


def _replace_dir(tmp: Path, target: Path, prefix: str) -> None:
    """Rename the complete folder ``tmp`` to ``target``, replacing an earlier ``target``."""
    if not target.exists():
        os.replace(tmp, target)
        return
    # Two renames: a kill between them leaves no target (never a mixed one); the old
    # content, renamed like a temporary, is removed by the next run.
    old = target.with_name(f"{prefix}old.tmp")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``target`` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; raises :class:`DataError` naming the file if it is not JSON."""
    try:
        return json.loads(_read_input(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


def read_lines(path: str | os.PathLike[str], what: str = "list file") -> list[str]:
    """The non-blank lines of a text list file (split files, image sets), stripped.

    Raises:
        DataError: naming the file: ``"<what> not found"``, or a folder, unreadable or
            not UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a readable text file ({e})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters (torch's run long)."""
    line = (str(e).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_torch(
    path: str | os.PathLike[str],
    what: str,
    expected: str,
    hint: str = "",
    numpy_state: bool = False,
    safe_globals: tuple = (),
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure a one-line DataError.

    Nothing in the file is executed: a pickle holding Python objects is refused (only
    tensors, containers, numbers and strings load; with ``numpy_state`` also the numpy
    arrays of a saved RNG state, as in the train stage's checkpoint.pt).

    Args:
        path: the checkpoint file.
        what: what it should be, for "<what> not found" (e.g. "encoder checkpoint").
        expected: what to pass instead, for the messages (e.g. "the encoder.pt written by `hvc train`").
        hint: appended to the refusal message (e.g. "(checkpoint.pt is the training state)").
        safe_globals: further classes a weights-only load may rebuild (e.g.
            ``argparse.Namespace``, which the authors' checkpoints carry under ``args``).
    Raises:
        DataError: naming the file: a folder, missing, holding Python objects a weights-only
            load refuses (names the first one), not a pickle, truncated.
    """
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"is a folder; pass {expected}")
    allowed = []
    if numpy_state:
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, whatever its module
        allowed = [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    allowed += list(safe_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except pickle.UnpicklingError as e:
        _, found, rest = str(e).partition("Unsupported global: GLOBAL ")
        if found and rest.split():
            refused = rest.split()[0]
            raise DataError(
                path, f"holds Python objects that a weights-only load refuses (e.g. {refused}){hint}; pass {expected}"
            ) from None
        raise DataError(path, f"not a PyTorch checkpoint (not a readable pickle){hint}; pass {expected}") from None
    except Exception as e:  # noqa: BLE001 - torch raises KeyError, EOFError, RuntimeError... for foreign files
        raise DataError(path, f"truncated or not a PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from None


def state_dict_differences(state: dict, expected: dict[str, tuple[int, ...]], model: str) -> str:
    """How a loaded state dict differs from a model's, in one line ("" when it matches).

    Args:
        state: the loaded {key: tensor}.
        expected: {key: shape} of the model.
        model: the model's name in the message (e.g. "HVC", "ResNet-50").
    Returns:
        e.g. ``"2 missing keys (e.g. fc.weight), 1 keys of another shape (e.g. conv1.weight:
        [64, 3, 3, 3] here, [64, 3, 7, 7] in ResNet-50)"``: counts with one example each, not
        torch's list of every key.
    """
    found = {str(k): tuple(v.shape) if hasattr(v, "shape") else None for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k] != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} keys of another shape (e.g. {k}: {list(found[k] or [])} here, {list(expected[k])} in {model})")
    return ", ".join(parts)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    return file_digests(path, ("sha256",), chunk)["sha256"]


def file_digests(path: str | os.PathLike[str], algorithms: Iterable[str] = ("sha256",), chunk: int = 1 << 20) -> dict[str, str]:
    """Hex digests of a file's bytes for several algorithms in one read of the file.

    Args:
        path: the file.
        algorithms: :mod:`hashlib` names, e.g. ``("sha256", "md5")``.
        chunk: bytes read at a time (1 MiB).
    Returns:
        ``{algorithm: hex digest}``.
    Raises:
        OSError: the file cannot be read; ValueError: an unknown algorithm.
    """
    hashes = {alg: hashlib.new(alg) for alg in dict.fromkeys(algorithms)}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            for h in hashes.values():
                h.update(block)
    return {alg: h.hexdigest() for alg, h in hashes.items()}


# --------------------------------------------------------------------------- images


def decode_image(data: bytes | None, name: str | os.PathLike[str] = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to an RGB array.

    Returns:
        uint8 array of shape (H, W, 3).
    Raises:
        DataError: naming ``name`` when there are no bytes (None, e.g. a shard sample
            without an image member), they are empty, not an image, or truncated.
    """
    if data is None:
        raise DataError(name, "no image data (e.g. a shard sample without a .jpg or .png member)")
    if len(data) == 0:
        raise DataError(name, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # forces a full decode: truncated files fail here
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy needs it
    except UnidentifiedImageError:
        raise DataError(name, "not a readable image") from None
    except Image.DecompressionBombError as e:
        raise DataError(name, f"image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(name, f"corrupt or truncated image ({e})") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB.

    Returns:
        uint8 array of shape (H, W, 3).
    Raises:
        DataError: the file is missing, empty, not an image or truncated.
    """
    return decode_image(_read_input(path), path)


def _read_input(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """The bytes of an input file; DataError naming it when it is missing or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a file") from None
    except PermissionError:
        raise DataError(path, "permission denied") from None
    except OSError as e:  # a symlink loop (ELOOP), an I/O error, a name too long...
        raise DataError(path, f"cannot read the {what} ({e.strerror or e})") from None


def read_bytes(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """The bytes of an input file.

    Raises:
        DataError: naming the file: ``"<what> not found"``, a folder, permission denied,
            or any other read failure (a symlink loop, an I/O error).
    """
    return _read_input(path, what)


def frame_order(path: str | os.PathLike[str]) -> tuple[float, str]:
    """Sort key of frame files: numeric names by number (``2`` before ``10``, whatever the
    zero padding), then the others by name."""
    stem = Path(path).stem
    return (int(stem) if stem.isdigit() else float("inf"), stem)


Inputs = Mapping[str, Any] | Iterable[tuple[str, Any]]


def check_outputs_apart(out: str | os.PathLike[str], inputs: Inputs, option: str = "--out") -> None:
    """Refuse an output path that is, contains or lies inside one of the inputs.

    An output folder is replaced as a whole (:func:`atomic_dir`), so ``--out`` equal to or
    above an input would delete it, and one inside an input would change it.

    Args:
        out: the output path.
        inputs: {option name (e.g. "--data"): path}, or (option name, path) pairs (an option
            given several times); None entries are ignored.
        option: the output's option, for the message.
    Raises:
        DataError: naming ``out`` and the input it overlaps.
    """
    o = os.path.realpath(out)
    for name, path in inputs.items() if isinstance(inputs, Mapping) else inputs:
        if path is None:
            continue
        i = os.path.realpath(path)
        if o == i:
            relation = "is"
        elif i.startswith(o.rstrip(os.sep) + os.sep):
            relation = "contains"
        elif o.startswith(i.rstrip(os.sep) + os.sep):
            relation = "lies inside"
        else:
            continue
        raise DataError(out, f"output {relation} the input {name} {path}; writing it would replace that input, choose another {option}")


@dataclass(frozen=True)
class Earlier:
    """How a stage recognises its own earlier output, which it may replace.

    Attributes:
        test: path -> whether the existing file or folder is this stage's output.
        what: what ``test`` looks for, for the message (e.g. "train.json with the provenance of stage train").
    """

    test: Callable[[Path], bool]
    what: str


def _provenance_stages(path: Path) -> set[str]:
    """The stages named by the provenance records of a JSON file: its top-level
    ``provenance``, or those of its values (a {benchmark: summary} file); empty when it is
    not such a file."""
    try:
        if not path.is_file() or path.stat().st_size > 64 << 20:
            return set()
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return set()
    records = [obj] if isinstance(obj, dict) else []
    if isinstance(obj, dict) and "provenance" not in obj:
        records = [v for v in obj.values() if isinstance(v, dict)]
    stages = {r["provenance"].get("stage") for r in records if isinstance(r.get("provenance"), dict)}
    return {s for s in stages if isinstance(s, str)}


def by_provenance(stage: str, record: str | None = None) -> Earlier:
    """An earlier output whose provenance record (:func:`hvc.config.code.provenance`) names
    ``stage``: in the JSON file itself, or in ``<folder>/<record>`` for a folder output."""

    def test(path: Path) -> bool:
        if record is not None:
            return path.is_dir() and _provenance_stages(path / record) == {stage}
        return _provenance_stages(path) == {stage}

    where = f"{record} " if record else ""
    return Earlier(test, f"{where}with the provenance of stage {stage!r}")


def by_members(names: Iterable[str]) -> Earlier:
    """An earlier output folder holding some of ``names`` and nothing else (no subfolder)."""
    allowed = frozenset(names)

    def test(path: Path) -> bool:
        if not path.is_dir() or path.is_symlink():
            return False
        entries = list(os.scandir(path))
        return bool(entries) and all(e.is_file(follow_symlinks=False) and e.name in allowed for e in entries)

    return Earlier(test, f"a folder of only {', '.join(sorted(allowed))}")


def by_content(test: Callable[[bytes], bool], what: str, limit: int = 64 << 20) -> Earlier:
    """An earlier output file (at most ``limit`` bytes) whose bytes pass ``test``."""

    def check(path: Path) -> bool:
        try:
            return path.is_file() and not path.is_symlink() and path.stat().st_size <= limit and test(path.read_bytes())
        except OSError:
            return False

    return Earlier(check, what)


def check_output(
    out: str | os.PathLike[str],
    inputs: Inputs,
    stage: str,
    earlier: Earlier,
    option: str = "--out",
) -> None:
    """The one rule for every output option of every subcommand, checked before any work.

    An output is refused when it is, holds or lies inside an input (:func:`check_outputs_apart`:
    writing it would replace or change that input), and when something already exists
    at its path that is not this stage's own earlier output (``earlier``, recognised by its
    stamp or provenance record): outputs are replaced as a whole, so a mistyped ``--out``
    naming a file or folder of the user's would be lost. An empty folder may be replaced.

    Args:
        out: the output path.
        inputs: {option or key: path} of everything the stage reads (and its other outputs);
            None entries are ignored.
        stage: the subcommand, for the message (e.g. "train").
        earlier: how this stage's earlier output is recognised.
        option: the output's option, for the message.
    Raises:
        DataError: naming ``out`` and, for an overlap, the input; for an existing path,
            what would have made it this stage's and what to do.
    """
    check_outputs_apart(out, inputs, option)
    path = Path(out)
    if not os.path.lexists(path):
        return
    try:
        empty = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        empty = False
    if empty or earlier.test(path):
        return
    kind = "folder" if path.is_dir() else "file"
    raise DataError(
        out,
        f"{option} names an existing {kind} that `hvc {stage}` did not write (no {earlier.what}); it would be replaced: "
        f"delete or move it, or choose another {option}",
    )


# --------------------------------------------------------------------------- masks

@functools.lru_cache(maxsize=1)
def davis_palette() -> tuple[int, ...]:
    """The DAVIS 2017 colour palette (768 ints), the PASCAL VOC bit-interleaved colour map.

    Index 0 is black (background), 1 is (128, 0, 0), 2 is (0, 128, 0), ... as in the
    masks distributed with DAVIS 2017 and YouTube-VOS.
    """
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return tuple(palette)


def read_mask(path: str | os.PathLike[str], greyscale_labels: bool = False) -> np.ndarray:
    """Read a segmentation mask as a label map.

    Accepts the two official layouts of PNG masks: palette ("P") PNGs whose indices are
    object ids (DAVIS 2017, YouTube-VOS, VOST) and greyscale ("L") PNGs with 0 =
    background and 255 = the single object (DAVIS 2016), which map to labels {0, 1}.
    Anything else would be scored as something it is not (a greyscale photograph saved
    as a .png becomes hundreds of "objects"), so it is refused.

    Args:
        path: the PNG file.
        greyscale_labels: read a greyscale PNG's values as labels as they are (VIP's
            ``Category_ids`` part maps, 0..19 and 255 void) instead of requiring 0/255.
    Returns:
        uint8 array of shape (H, W), 0 = background, k = object k.
    Raises:
        DataError: naming the file: missing, unreadable, not a PNG (e.g. a JPEG renamed
            .png: lossy compression invents labels), of another mode (RGB masks are
            ambiguous), or greyscale with values other than 0 and 255.
    """
    data = _read_input(path, "mask file")
    if len(data) == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode, fmt = im.mode, im.format
            arr = np.asarray(im)
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image") from None
    except Image.DecompressionBombError as e:
        raise DataError(path, f"mask too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"corrupt or truncated mask ({e})") from None
    if fmt != "PNG":
        raise DataError(path, f"mask is a {fmt} image, not a PNG; masks must be lossless palette or 0/255 greyscale PNGs")
    if mode == "P":
        return arr.astype(np.uint8)
    if mode == "1":
        return arr.astype(np.uint8)
    if mode == "L":
        arr = arr.astype(np.uint8)
        if greyscale_labels:
            return arr
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
        odd = [int(v) for v in values if v not in (0, 255)]
        if odd:
            shown = ", ".join(map(str, odd[:5])) + (", ..." if len(odd) > 5 else "")
            raise DataError(
                path,
                f"greyscale mask with {len(odd)} value(s) other than 0 and 255 ({shown}); expected a DAVIS 2016 "
                "0/255 mask or a palette PNG whose indices are object ids",
            )
        return (arr == 255).astype(np.uint8)
    raise DataError(path, f"mask has mode {mode!r}; expected a palette ('P') or greyscale ('L') PNG")


def encode_mask(labels: np.ndarray) -> bytes:
    """Encode a label map as a palette PNG with the DAVIS palette.

    Args:
        labels: integer array (H, W) with values in [0, 255].
    Raises:
        ValueError: wrong shape or labels outside [0, 255].
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must lie in [0, 255], got [{labels.min()}, {labels.max()}]")
    im = Image.fromarray(labels.astype(np.uint8))  # mode "L"
    im.putpalette(list(davis_palette()))  # turns an "L" image into "P" without touching indices
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_mask(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write a label map (H, W) as a DAVIS palette PNG, atomically."""
    write_bytes(path, encode_mask(labels))
