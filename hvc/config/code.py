"""Code identity: which of this package's source files each stage runs, and their hash.

A stage's content id (:mod:`hvc.config.ids`) hashes the parameters it reads *and* the code
it runs, so editing ``hvc/methods/hvc/loss.py`` gives a new model id and re-runs training
and everything after it, while editing ``hvc/report/tables.py`` re-runs only the tables.

What a stage runs is found by reading imports, not by running them: the stage's entry
modules (:data:`STAGE_ENTRIES`) and every ``hvc`` module they import, at any depth,
including imports inside functions. Of ``hvc.methods`` the generic layers lead only into
the trained method's own package, so a change to one method never re-trains another; what
that package itself imports from another method's package (STT's use of LIIR's window
helpers) is followed, since it runs.

A file is hashed as its syntax tree (:func:`ast.dump`), so a change to comments, blank
lines or formatting alone keeps the id; any change to code or docstrings makes a new one.
The versions of torch and torchvision are part of the hash too: a new PyTorch may change
the numbers.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import platform
import subprocess
from functools import cache
from pathlib import Path

from hvc.config.registry import method_package, method_spec

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the hvc/ folder
PACKAGE = PACKAGE_DIR.name

# Modules each stage starts from. The CLI is left out: it only parses arguments and calls
# these, and every call passes the same Params; see docs in README ("What re-runs").
STAGE_ENTRIES: dict[str, tuple[str, ...]] = {
    "demo_data": ("hvc.data.demo",),
    "shards": ("hvc.data.shards",),
    "train": ("hvc.train",),
    "propagate": ("hvc.eval.predict",),
    "evaluate": ("hvc.eval.score",),
    "tables": ("hvc.report.tables",),
    # the overlays and bars, plus each method-only figure of the trained method (its registry entry)
    "figures": ("hvc.report.figures",),
    "flow": ("hvc.eval.flow",),  # hvc flow: Table 11
    # not content-addressed (a dataset is verified by its checksums; an archive is a copy of
    # the predictions); listed so that DVC re-runs them when their code changes
    "fetch": ("hvc.data.download",),
    "submission": ("hvc.eval.submission",),
}
LIBRARIES = ("torch", "torchvision")  # versions that enter every code hash


def _module_file(module: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The source file of a module of the package in ``root`` (package ``__init__.py`` for a
    package), or None."""
    rel = Path(*module.split(".")[1:])
    for path in (root / rel).with_suffix(".py"), root / rel / "__init__.py":
        if path.is_file():
            return path
    return None


def _stamp(path: Path) -> tuple[int, int]:
    """Modification time and size: the key under which a file's parse is cached, so a file
    edited while this process runs is read again."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@cache
def _parse(path: Path, stamp: tuple[int, int]) -> ast.Module:  # stamp: part of the cache key only
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def _imports(path: Path, stamp: tuple[int, int], root: Path) -> tuple[str, ...]:
    """Package modules imported anywhere in ``path`` (``from hvc.x import y`` gives ``hvc.x``
    and, when it is a module, ``hvc.x.y``), plus each one's parent packages."""
    package = root.name
    found: set[str] = set()
    for node in ast.walk(_parse(path, stamp)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == package:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}", root))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
    with_parents = set()
    for m in found:
        parts = m.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return tuple(sorted(m for m in with_parents if _module_file(m, root)))


def _method_module(module: str) -> bool:
    """Whether ``module`` lies in a method's package (``hvc.methods.<name>.*``, not ``base``)."""
    parts = module.split(".")
    return len(parts) > 2 and parts[1] == "methods" and parts[2] != "base"


def _followed(module: str, method: str) -> bool:
    """Whether the generic layers' imports lead the closure into ``module``: every module
    except other methods' packages (the registry and the plug-in loader name every method)."""
    return not _method_module(module) or module.split(".")[2] == method


def method_entries(stage: str, method: str) -> list[str]:
    """Modules of ``method`` a stage runs besides its entries, from the registry: training
    runs the method module and its registry entry (its parameter section, its phases' data
    kinds); propagation its method module (the encoder is built from it)
    and its own inference, if any; figures its method-only figures.

    Raises:
        KeyError: unknown method.
    """
    package = method_package(method)
    if stage == "train":
        return [f"{package}.method", f"{package}.spec"]
    spec = method_spec(method)
    if stage == "propagate":
        return [f"{package}.method"] + ([spec.inference.partition(":")[0]] if spec.inference else [])
    if stage == "figures":
        return [target.partition(":")[0] for target in spec.figures.values()]
    return []


def stage_files(stage: str, method: str = "hvc", root: Path = PACKAGE_DIR) -> list[Path]:
    """Source files of this package that ``stage`` runs, sorted.

    Args:
        stage: a key of :data:`STAGE_ENTRIES` (``demo_data``, ``shards``, ``train``, ``propagate``,
            ``evaluate``, ``tables``, ``figures``, ``flow``).
        method: the trained method (``params.method``), or the propagated encoder's; only
            its package under ``hvc/methods/`` is followed (:func:`method_entries`).
        root: the package folder to read (default: this package; another copy of it, e.g.
            another checkout, to compare).
    Raises:
        KeyError: unknown stage.
    """
    # (module, imported by a method's own module): what a method's code imports from another
    # method's package (STT's use of LIIR's window helpers, Mask-VOS's of HVC's backbone) runs
    # too, so it is followed; the generic layers' imports never lead into another method
    todo = [(m, False) for m in (*STAGE_ENTRIES[stage], *method_entries(stage, method))]
    seen: set[str] = set()
    while todo:
        module, by_method = todo.pop()
        if module in seen or not (by_method or _followed(module, method)):
            continue
        seen.add(module)
        path = _module_file(module, root)
        if path is not None:
            todo.extend((m, _method_module(module)) for m in _imports(path, _stamp(path), root))
    return sorted(p for m in seen if (p := _module_file(m, root)) is not None)


@cache
def _tree_hash(path: Path, stamp: tuple[int, int]) -> str:
    """SHA-256 of the file's syntax tree without positions: comments and layout do not count."""
    return hashlib.sha256(ast.dump(_parse(path, stamp), include_attributes=False).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (``"absent"`` when one is not installed)."""
    return dict(_library_versions())


@cache
def _library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def code_hash(stage: str, method: str = "hvc", length: int = 12, root: Path = PACKAGE_DIR) -> str:
    """Hash of the code ``stage`` runs: the syntax tree of each of :func:`stage_files`, keyed
    by its path inside the package, and :func:`library_versions`. Hex, ``length`` digits.
    ``root``: as in :func:`stage_files`."""
    h = hashlib.sha256()
    for path in stage_files(stage, method, root):
        h.update(f"{path.relative_to(root.parent).as_posix()}\0{_tree_hash(path, _stamp(path))}\0".encode())
    for name, version in _library_versions().items():
        h.update(f"{name}=={version}\0".encode())
    return h.hexdigest()[:length]


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, with ``+dirty`` when files differ;
    None outside a git checkout (an installed wheel) or without git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def provenance(stage: str, method: str = "hvc", device: str | None = None) -> dict[str, str | None]:
    """What produced an output, for its JSON: package version, the stage's code hash, git
    commit (None when not a checkout), torch and torchvision versions, Python, and the device
    (e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"``, ``"cpu"``; None for stages that use none)."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "package": f"{PACKAGE} {version}",
        "stage": stage,
        "code_hash": code_hash(stage, method),
        "git_commit": git_commit(),
        **library_versions(),
        "python": platform.python_version(),
        "device": device,
    }
