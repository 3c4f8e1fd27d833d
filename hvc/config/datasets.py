"""The dataset registry (``hvc/config/datasets.yaml``): what each dataset's archives are and
where they come from, validated on load.

Kept apart from :mod:`hvc.data.download` (HTTP, extraction) so that reading parameters,
which checks ``data.sources`` names against the registry, imports no network code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hvc.io import DataError

REGISTRY_PATH = Path(__file__).parent / "datasets.yaml"
STAMP_NAME = ".hvc-fetch.json"

_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
_CHECKSUM_RE = re.compile(r"^(md5|sha1|sha256):([0-9a-f]+)$")
_URL_RE = re.compile(r"^https?://\S+$")


# --------------------------------------------------------------------------- registry schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Strict):
    """One archive of a dataset."""

    filename: str = Field(description="Name the file is stored under in root/downloads/<dataset>/.")
    url: str | None = Field(None, description="Direct download URL; for manual datasets, where to get it.")
    size: int | None = Field(None, gt=0, description="Size in bytes; null when no source gives it.")
    checksum: str | None = Field(None, description="'md5:<hex>', 'sha1:<hex>' or 'sha256:<hex>'; null when unknown.")
    checksum_source: str = Field(min_length=1, description="Where size and checksum come from, or why unknown.")
    notes: str | None = None

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in (".", "..") or v.startswith("."):
            raise ValueError("must be a plain file name (no folders, not hidden)")
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not _URL_RE.match(v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("checksum")
    @classmethod
    def _checksum_format(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        m = _CHECKSUM_RE.match(v)
        if not m or len(m.group(2)) != _HASH_LENGTHS[m.group(1)]:
            raise ValueError("must be 'md5:' + 32, 'sha1:' + 40 or 'sha256:' + 64 hex digits (or null when unknown)")
        return v


class DatasetSpec(_Strict):
    """One dataset: what to download, its terms, and what must exist once extracted."""

    role: Literal["train", "benchmark"]
    description: str = Field(min_length=1)
    homepage: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    manual: bool = Field(False, description="True when the files need registration and are placed by hand.")
    instructions: str | None = Field(None, description="How to obtain the files (required when manual).")
    files: list[FileSpec] = Field(min_length=1)
    layout: list[str] = Field(min_length=1, description="Paths relative to root/<name> that must exist.")
    notes: str | None = None

    @field_validator("homepage")
    @classmethod
    def _homepage_url(cls, v: str) -> str:
        if not _URL_RE.match(v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("layout")
    @classmethod
    def _relative_paths(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or p.startswith("/") or ".." in p.split("/"):
                raise ValueError(f"{p!r}: layout paths must be relative and stay inside the dataset folder")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [f.filename for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"file names must be unique, got {names}")
        if self.manual and not self.instructions:
            raise ValueError("manual datasets need 'instructions' (where to register and download)")
        if not self.manual:
            missing = [f.filename for f in self.files if not f.url]
            if missing:
                raise ValueError(f"files {missing} have no url; give one or mark the dataset manual: true")
        return self


class _RegistryFile(_Strict):
    version: Literal[1]
    datasets: dict[str, DatasetSpec] = Field(min_length=1)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid dataset registry ({source})"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_registry(path: str | os.PathLike[str] = REGISTRY_PATH) -> dict[str, DatasetSpec]:
    """Read and validate the dataset registry.

    Args:
        path: the registry YAML; defaults to the packaged ``hvc/config/datasets.yaml``.
    Returns:
        dataset name -> :class:`DatasetSpec`, in file order.
    Raises:
        DataError: naming the file when it is missing or not YAML, and naming each bad key
            (e.g. ``datasets.davis2016.files.0.checksum``) when it breaks the schema.
    Matches the layout of ``hvc/config/datasets.yaml`` (``version: 1``, ``datasets: {...}``).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "dataset registry not found") from None
    except yaml.YAMLError as e:
        raise DataError(path, f"not valid YAML ({e})") from None
    try:
        return dict(_RegistryFile.model_validate(data).datasets)
    except ValidationError as e:
        raise DataError(path, _format_errors(e, "schema of hvc.data.download.DatasetSpec")) from None


def resolve_spec(name: str, registry: Mapping[str, DatasetSpec | Mapping[str, Any]] | None) -> DatasetSpec:
    entries = load_registry() if registry is None else registry
    if name not in entries:
        raise DataError(
            REGISTRY_PATH if registry is None else "<registry>",
            f"unknown dataset {name!r}; known: {', '.join(entries)}",
        )
    entry = entries[name]
    if isinstance(entry, DatasetSpec):
        return entry
    try:
        return DatasetSpec.model_validate(entry)
    except ValidationError as e:
        raise DataError("<registry>", _format_errors(e, f"entry {name!r}")) from None


def licence_summary(licence: str) -> str:
    """A registry licence as a user reads it in ``hvc fetch --list``: the terms without the
    maintainers' source notes in brackets (where a statement was quoted from, what to
    re-check); a licence no source states becomes "not stated here: read the homepage"."""
    import re

    text = " ".join(re.sub(r"\s*\[[^\]]*\]", "", licence).split())
    if text.lower().startswith("unverified"):
        return "not stated here: read the homepage before use"
    return text


def dataset_rows(registry: Mapping[str, DatasetSpec] | None = None) -> list[dict[str, Any]]:
    """One row per registry dataset for ``hvc fetch --list``.

    Returns:
        dicts with name, role, size (total bytes of its files, or None when a size is
        unknown), known (bytes of the files whose size is known), licence (as the registry
        has it, with its source notes), terms (:func:`licence_summary`), manual, homepage.
    """
    rows = []
    for name, spec in (load_registry() if registry is None else registry).items():
        sizes = [f.size for f in spec.files]
        rows.append(
            {
                "name": name,
                "role": spec.role,
                "size": sum(sizes) if all(s is not None for s in sizes) else None,
                "known": sum(s for s in sizes if s is not None),
                "licence": " ".join(spec.licence.split()),
                "terms": licence_summary(spec.licence),
                "manual": spec.manual,
                "homepage": spec.homepage,
            }
        )
    return rows


# Each training set: its dataset in the registry (hvc/config/datasets.yaml; `hvc fetch NAME`
# extracts it to data.root/NAME) and where its images lie below data.root. YouTube-VOS
# frames are separate images (HVC-YT).
TRAIN_SET_DATASETS = {
    "coco": "coco2017_train",
    "voc": "voc2012_trainval",
    "msra10k": "msra10k",
    "ytvos": "ytvos2018_train",
}
TRAIN_SET_GLOBS = {
    "demo": "train/*",
    "coco": "coco2017_train/train2017/*.jpg",
    "voc": "voc2012_trainval/VOCdevkit/VOC2012/JPEGImages/*.jpg",
    "msra10k": "msra10k/MSRA10K_Imgs_GT/Imgs/*.jpg",
    "ytvos": "ytvos2018_train/train_all_frames/JPEGImages/*/*.jpg",
}
# Training sets that have videos: the folders (one per video, frames in name order) below
# data.root (for demo, the demo-data output folder, built with its training videos).
TRAIN_VIDEO_GLOBS = {
    "demo": "train_videos/*",
    "ytvos": "ytvos2018_train/train_all_frames/JPEGImages/*",
}
