"""Results follow code changes: each stage's content id hashes the code it runs.

Unit level (default run): which files a stage runs, which edits change a stage's code hash,
how a code hash moves the content ids, and the provenance record in the score JSON.
End to end (slow): Snakemake in a copy of the repository re-runs exactly the stages whose
code was edited, and what follows them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hvc.config import ids
from hvc.config.code import (
    PACKAGE_DIR,
    STAGE_ENTRIES,
    code_hash,
    provenance,
    stage_files,
)
from hvc.config.params import Params, load_params
from hvc.eval.score import evaluate_benchmark
from hvc.io import read_json
from workflow_copy import job_counts

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
LOSS = Path("methods/hvc/loss.py")
TABLES = Path("report/tables.py")
ID_STAGES = ("demo_data", "shards", "train", "propagate", "evaluate")


def copy_package(dest: Path) -> Path:
    """A copy of the hvc package folder (no bytecode) at ``dest/hvc``."""
    return Path(shutil.copytree(PACKAGE_DIR, dest / "hvc", ignore=shutil.ignore_patterns("__pycache__")))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def hashes(root: Path) -> dict[str, str]:
    return {stage: code_hash(stage, root=root) for stage in STAGE_ENTRIES}


# --------------------------------------------------------------------------- which files a stage runs


def test_a_stage_runs_the_files_it_imports_and_no_other():
    model = stage_files("train")
    tables = stage_files("tables")
    assert PACKAGE_DIR / LOSS in model and PACKAGE_DIR / "train.py" in model
    assert PACKAGE_DIR / TABLES not in model
    assert PACKAGE_DIR / TABLES in tables and PACKAGE_DIR / LOSS not in tables
    assert PACKAGE_DIR / "cli.py" not in {f for s in STAGE_ENTRIES for f in stage_files(s)}  # see README
    # function-level imports count: propagation loads the trained backbone inside functions too
    assert PACKAGE_DIR / "methods/hvc/model.py" in stage_files("propagate")


def test_another_method_is_not_followed(tmp_path, monkeypatch):
    from hvc.config import registry

    monkeypatch.setitem(registry.METHODS, "other", "hvc.methods.other")
    pkg = copy_package(tmp_path)
    (pkg / "methods" / "other").mkdir()
    (pkg / "methods" / "other" / "__init__.py").write_text('"""Another method."""\n')
    (pkg / "methods" / "other" / "method.py").write_text('"""Its method."""\nfrom hvc.methods.other import loss\n')
    (pkg / "methods" / "other" / "loss.py").write_text("def loss():\n    return 0\n")
    hvc_model = stage_files("train", "hvc", root=pkg)
    other_model = stage_files("train", "other", root=pkg)
    assert pkg / "methods/other/loss.py" in other_model and pkg / "methods/other/loss.py" not in hvc_model
    before = code_hash("train", "hvc", root=pkg)
    append(pkg / "methods/other/loss.py", "\nSCALE = 2\n")
    assert code_hash("train", "hvc", root=pkg) == before  # an edit to one method never re-trains another


def test_what_a_method_imports_from_another_method_is_followed(tmp_path):
    """STT's loss uses LIIR's window helpers and Mask-VOS's encoder HVC's backbone: an edit to
    those files re-trains STT and Mask-VOS (they run them), and nothing else of LIIR's or
    HVC's packages enters their hashes."""
    pkg = copy_package(tmp_path)
    stt, maskvos = stage_files("train", "stt", root=pkg), stage_files("train", "maskvos", root=pkg)
    assert pkg / "methods/liir/loss.py" in stt and pkg / "methods/liir/method.py" not in stt
    assert pkg / "methods/hvc/model.py" in maskvos and pkg / "methods/hvc/method.py" not in maskvos
    before = {m: code_hash("train", m, root=pkg) for m in ("hvc", "liir", "stt", "maskvos")}
    append(pkg / "methods/liir/loss.py", "\nSCALE = 2\n")
    after = {m: code_hash("train", m, root=pkg) for m in before}
    assert {m for m in before if before[m] != after[m]} == {"liir", "stt"}
    append(pkg / "methods/hvc/model.py", "\nSCALE = 2\n")
    assert {m for m in after if code_hash("train", m, root=pkg) != after[m]} == {"hvc", "maskvos"}


# --------------------------------------------------------------------------- which edits change a code hash


def test_layout_edits_keep_the_hash_code_and_docstring_edits_change_it(tmp_path):
    pkg = copy_package(tmp_path)
    base = hashes(pkg)
    assert base == hashes(PACKAGE_DIR)  # keyed by the path inside the package, not where it lies

    loss = pkg / LOSS
    original = loss.read_text()
    # comments, blank lines and the layout of an expression are not code
    loss.write_text("# a comment before the code\n\n\n" + original.replace("\n\n\n", "\n\n\n\n", 1) + "\n# the end\n")
    assert hashes(pkg) == base

    loss.write_text(original + "\n_UNUSED = None\n")  # a new statement, even one that does nothing
    changed = {s for s, h in hashes(pkg).items() if h != base[s]}
    assert {"train", "propagate"} <= changed  # training, and propagation (it builds the backbone)
    assert not changed & {"demo_data", "shards", "evaluate", "tables"}

    loss.write_text(original.replace('"""', '"""Edited docstring. ', 1))
    assert hashes(pkg)["train"] != base["train"]  # a docstring is part of the syntax tree

    loss.write_text(original)
    append(pkg / TABLES, "\n_UNUSED = None\n")
    assert {s for s, h in hashes(pkg).items() if h != base[s]} == {"tables"}


def test_code_hash_includes_torch_and_torchvision_versions(monkeypatch):
    from hvc.config import code

    base = code_hash("demo_data")
    monkeypatch.setattr(code, "_library_versions", lambda: {"torch": "0.0.0", "torchvision": "0.0.0"})
    assert code_hash("demo_data") != base


# --------------------------------------------------------------------------- how a code hash moves the ids


def fake_code(changed_stage: str):
    """A code_hash in which only ``changed_stage``'s code differs from the real one."""
    return lambda stage, method="hvc": code_hash(stage, method) + ("x" if stage == changed_stage else "")


@pytest.mark.parametrize(
    "edited, moved",
    [
        ("demo_data", {"demo_data", "shards", "train"}),  # new data → new shards → new model
        ("shards", {"shards", "train"}),
        ("train", {"train"}),
        ("propagate", {"propagate"}),
        ("evaluate", {"evaluate"}),
    ],
)
def test_a_code_change_moves_the_ids_of_its_stage_and_what_reads_its_output(monkeypatch, edited, moved):
    p = load_params([ROOT / "params.yaml", TINY])
    base = ids.stage_ids(p)
    monkeypatch.setattr(ids, "code_hash", fake_code(edited))
    new = ids.stage_ids(p)
    assert {s for s in ID_STAGES if new[s] != base[s]} == moved


def test_a_real_training_set_has_no_data_id_upstream(monkeypatch):
    p = Params(data={"train_set": "coco", "root": "data"})
    base = ids.stage_ids(p)
    monkeypatch.setattr(ids, "code_hash", fake_code("demo_data"))
    new = ids.stage_ids(p)
    assert new["shards"] == base["shards"] and new["demo_data"] != base["demo_data"]  # the demo is not its input


# --------------------------------------------------------------------------- provenance


def test_provenance_names_the_code_versions_and_device():
    prov = provenance("train", "hvc", "cuda:0 (NVIDIA H200)")
    assert prov["code_hash"] == code_hash("train") and prov["stage"] == "train"
    assert prov["package"].startswith("hvc ") and prov["device"] == "cuda:0 (NVIDIA H200)"
    assert prov["torch"] and prov["torchvision"] and prov["python"]
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", prov["git_commit"])


def test_device_label_names_the_gpu_model(monkeypatch):
    import torch

    from hvc.device import device_label

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"NVIDIA H200 #{index}")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert device_label(torch.device("cuda", 0)) == "cuda:0 (NVIDIA H200 #0)"
    assert device_label(torch.device("cuda")) == "cuda:1 (NVIDIA H200 #1)"  # the current GPU
    assert device_label(torch.device("cpu")) == "cpu"


def test_score_json_carries_the_provenance_of_the_evaluation_code(bench, tmp_path):
    p = load_params([ROOT / "params.yaml", TINY])
    out = tmp_path / "scores" / "demo.json"
    summary, _ = evaluate_benchmark(p, "demo", bench, bench / "Annotations/480p", out)
    written = read_json(out)
    assert written["JF_mean"] == 1.0 and written == summary
    assert written["provenance"]["stage"] == "evaluate"
    assert written["provenance"]["code_hash"] == code_hash("evaluate")


# --------------------------------------------------------------------------- end to end with Snakemake


def _run(cmd: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(cwd))  # the copy's hvc package, not this checkout's
    proc = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env, timeout=900, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def _would_run(ws: Path) -> dict[str, int]:
    """Rule → job count of a dry run; {} when nothing is to be done."""
    log = _run("snakemake all_tables --cores 2 -n --configfile tests/configs/tiny.yaml", ws)
    return job_counts(log)


@pytest.mark.slow
def test_snakemake_reruns_what_an_edit_of_the_code_touches(workflow_workspace):
    ws = workflow_workspace("tiny.yaml")
    pkg = copy_package(ws)
    _run("snakemake all_tables --cores 2 --configfile tests/configs/tiny.yaml", ws)
    assert _would_run(ws) == {}

    loss, tables = pkg / LOSS, pkg / TABLES
    loss_code, tables_code = loss.read_text(), tables.read_text()

    # (c) comments only: nothing re-runs
    append(loss, "\n# a remark about the loss\n")
    append(tables, "\n# a remark about the tables\n")
    assert _would_run(ws) == {}

    # (a) the loss: training and everything after it, never the data or the shards
    append(loss, "\n_UNUSED = None\n")
    assert _would_run(ws) == {"train": 1, "propagate": 2, "evaluate": 2, "tables": 1, "figures": 1, "all_tables": 1}
    loss.write_text(loss_code)
    assert _would_run(ws) == {}

    # (b) the tables: the tables, and the figures drawn from them
    append(tables, "\n_UNUSED = None\n")
    assert _would_run(ws) == {"tables": 1, "figures": 1, "all_tables": 1}
    tables.write_text(tables_code)
    assert _would_run(ws) == {}
