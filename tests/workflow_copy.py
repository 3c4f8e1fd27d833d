"""Scratch copies of the workflow for the tests that run Snakemake or DVC, and the parse of
Snakemake's job table."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_workflow(dest: Path, configs: Iterable[str] = ("tiny.yaml",), config_dir: str = "tests/configs", git_files: bool = False) -> Path:
    """The files a Snakemake run needs, copied to ``dest`` (created; returned): Snakefile,
    params.yaml, workflow/ (no ``__pycache__``), each named file of tests/configs/ into
    ``config_dir`` and, with ``git_files``, .gitignore and .dvcignore. The hvc package is
    installed, not copied."""
    dest.mkdir(parents=True)
    for name in ("Snakefile", "params.yaml") + ((".gitignore", ".dvcignore") if git_files else ()):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    for name in configs:
        (dest / config_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "tests" / "configs" / name, dest / config_dir / name)
    return dest


def job_counts(log: str) -> dict[str, int]:
    """Rule → job count from Snakemake's 'Job stats' table of a run or dry run ({} when no
    job ran or would run)."""
    if "Job stats:" not in log:
        return {}
    table = log.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m[1] != "total"}
