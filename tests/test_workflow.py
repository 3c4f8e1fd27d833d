"""Workflow conventions checked through Snakemake itself (slow: each call parses the workflow):
`snakemake --lint` finds only the documented, deliberate leftovers, and the fetch rule
links a dataset named in data.sources instead of downloading it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from hvc.io import read_json
from test_existing_data import make_davis
from workflow_copy import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# the findings README ("Workflow conventions") explains as deliberate
DELIBERATE = (
    "Specify a conda environment or container for each rule.",
    "Shell command directly uses variable PARAMS from outside of the rule",
    "Mixed rules and functions in same snakefile.",
)


def workspace(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "ws", configs=())


def test_lint_finds_only_the_deliberate_leftovers(tmp_path):
    ws = workspace(tmp_path)
    proc = subprocess.run(["snakemake", "--lint"], cwd=ws, capture_output=True, text=True)
    # text output ("--lint json" still prints text in Snakemake 9.27): "    * <title>:" per finding
    found = re.findall(r"^    \* (.+?):?$", proc.stdout + proc.stderr, re.M)
    assert found, "lint output not parsed:\n" + proc.stderr[-2000:]
    unexpected = sorted({t for t in found if not t.startswith(DELIBERATE)})
    assert not unexpected, unexpected


def test_fetch_rule_links_a_dataset_named_in_data_sources(tmp_path):
    ws = workspace(tmp_path)
    lab = make_davis(tmp_path / "lab" / "DAVIS")
    (ws / "mine.yaml").write_text(f"data:\n  root: data\n  sources:\n    davis2017_trainval: {lab}\n")
    stamp = "data/davis2017_trainval/.hvc-fetch.json"
    proc = subprocess.run(
        ["snakemake", "--cores", "1", stamp, "--configfile", "mine.yaml"], cwd=ws, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ws / "data/davis2017_trainval/DAVIS").resolve() == lab.resolve()
    assert read_json(ws / stamp)["source"] == str(lab.resolve())
    log = (ws / "logs/fetch/davis2017_trainval.log").read_text()
    assert "content sha256" in log and (ws / "logs/fetch/davis2017_trainval.tsv").exists()
