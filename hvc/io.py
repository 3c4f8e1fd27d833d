"""The one place where files are read and written: images, masks, JSON, atomic outputs.

Every output of the pipeline goes through :func:`atomic_path` or :func:`atomic_dir`:
the content is written under a temporary name beside the target and renamed into place
only when complete, so a stage killed at any point leaves either its complete previous
output or none.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data: the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    The temporary file lives in the target's folder so the final ``os.replace`` is an
    atomic rename on the same filesystem.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` (a folder) on success.

    A previous ``target`` is removed only after the new content is complete; on any
    exception the temporary folder is deleted and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- images


def decode_image(data: bytes, name: str | os.PathLike[str] = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to an RGB array.

    Returns:
        uint8 array of shape (H, W, 3).
    Raises:
        DataError: naming ``name`` when the bytes are empty, not an image, or truncated.
    """
    if len(data) == 0:
        raise DataError(name, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # forces a full decode: truncated files fail here
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy needs it
    except UnidentifiedImageError:
        raise DataError(name, "not a readable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(name, f"corrupt or truncated image ({e})") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB.

    Returns:
        uint8 array of shape (H, W, 3).
    Raises:
        DataError: the file is missing, empty, not an image or truncated.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    return decode_image(data, path)


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


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a segmentation mask as a label map.

    Accepts the two official layouts: palette ("P") PNGs whose indices are object ids
    (DAVIS 2017, YouTube-VOS, VOST) and greyscale ("L") PNGs with 0 = background and
    255 = the single object (DAVIS 2016), which map to labels {0, 1}. A greyscale mask
    with other values than 0 and 255 is read as-is (each value a label).

    Returns:
        uint8 array of shape (H, W), 0 = background, k = object k.
    Raises:
        DataError: missing, unreadable, or of another mode (RGB masks are ambiguous).
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(path, "mask file not found") from None
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"corrupt or truncated mask ({e})") from None
    if mode == "P":
        return arr.astype(np.uint8)
    if mode in ("L", "1"):
        arr = arr.astype(np.uint8)
        if mode == "1":
            return arr
        counts = np.bincount(arr.ravel(), minlength=256)
        if counts[1:255].sum() == 0:  # only 0 and 255: DAVIS 2016
            return (arr == 255).astype(np.uint8)
        return arr
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
