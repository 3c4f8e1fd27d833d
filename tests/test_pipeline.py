"""The whole chain through both entry points (Snakemake and DVC) on the tiny demo setting.

Each test copies the workflow into a temporary folder and runs the real commands:
data → shards → train → propagate → evaluate → tables, then checks caching (a second run
does nothing; a training parameter re-runs only training and what follows).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from hvc.config.code import code_hash
from hvc.config.params import deep_merge

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
STAGES = {"demo_data", "shards", "train", "propagate", "evaluate", "tables", "figures"}

pytestmark = pytest.mark.slow


def run(cmd, cwd, check=True):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    proc = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def workspace(tmp_path, tiny_params=False):
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("Snakefile", "dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, ws / name)
    shutil.copytree(ROOT / "workflow", ws / "workflow")
    (ws / "tests" / "configs").mkdir(parents=True)
    shutil.copy(TINY, ws / "tests" / "configs" / "tiny.yaml")
    if tiny_params:  # DVC reads params.yaml only: merge the tiny setting into it
        merged = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(TINY.read_text()))
        (ws / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return ws


def job_counts(log):
    """Rule → count from Snakemake's 'Job stats' table."""
    table = log.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_snakemake_demo_runs_caches_and_reruns_only_dependents(tmp_path):
    ws = workspace(tmp_path)
    smk = "snakemake all_tables --cores 2 --configfile tests/configs/tiny.yaml"
    run(smk, ws)
    table = (ws / "results/tables/demo.md").read_text()
    assert "HVC (trained)" in table and "Random init" in table
    values = re.findall(r"\| (-?\d+\.\d)(?= \|)", table)
    assert len(values) >= 14  # 7 metrics x 2 encoders, real numbers
    assert (ws / "results/tables/demo.csv").exists() and (ws / "results/tables/demo.tex").exists()
    assert (ws / "results/figures/hvc_demo.png").exists()
    # the DAVIS toolkit's CSVs next to each encoder's scores; a log for every job
    toolkit = sorted(ws.glob("artifacts/scores/*/*/*/demo/global_results-val.csv"))  # encoder/propagation/evaluation
    assert len(toolkit) == 2 and toolkit[0].read_text().startswith("J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n")
    assert {p.parts[-2] if p.parent.name != "logs" else p.name for p in (ws / "logs").iterdir()} >= STAGES
    # every output JSON says which code made it, where
    (train_json,) = ws.glob("artifacts/models/*/train.json")
    provenance = json.loads(train_json.read_text())["provenance"]
    assert provenance["code_hash"] == code_hash("model")
    assert provenance["device"].startswith("cuda:" if torch.cuda.is_available() else "cpu")
    provenance = json.loads(toolkit[0].parent.with_suffix(".json").read_text())["provenance"]
    assert provenance["code_hash"] == code_hash("evaluation") and provenance["stage"] == "evaluation"
    assert list(ws.glob("logs/propagate/**/*.tsv")) and list(ws.glob("logs/train/*.log"))

    # the report: captioned tables and figures, and the run time of every job
    run("snakemake --report report.html --configfile tests/configs/tiny.yaml", ws)  # no target: all_tables
    report = (ws / "report.html").read_text()
    for needle in ("demo.html", "hvc_demo.png", "bars_demo.png", "(paper)", "Tables", "Figures"):
        assert needle in report, needle

    assert "Nothing to be done" in run(f"{smk} -n", ws)

    (ws / "lr.yaml").write_text("train:\n  lr: 0.002\n")
    counts = job_counts(run("snakemake all_tables --cores 2 -n --configfile tests/configs/tiny.yaml lr.yaml", ws))
    assert counts == {"train": 1, "propagate": 1, "evaluate": 1, "tables": 1, "figures": 1, "all_tables": 1}

    (ws / "prop.yaml").write_text("propagation:\n  topk: 5\n")
    counts = job_counts(run("snakemake all_tables --cores 2 -n --configfile tests/configs/tiny.yaml prop.yaml", ws))
    assert counts == {"propagate": 2, "evaluate": 2, "tables": 1, "figures": 1, "all_tables": 1}


def _dvc_stages():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in stages.items():
        body = st.get("do", st)
        cmd = body["cmd"]
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in body.get("outs", []) + body.get("metrics", [])]
        out[name] = {"cmd": cmd.split()[1], "deps": body.get("deps", []), "outs": outs}
    return out


def _kind(path):
    """artifacts/<kind>/<id>/... → <kind>; metrics/<encoder>.json → scores; results/x → results/x."""
    parts = Path(path).parts
    if parts[0] == "metrics":
        return "scores"
    return parts[1] if parts[0] == "artifacts" else "/".join(parts[:2])


def test_snakemake_and_dvc_declare_the_same_stages(tmp_path):
    ws = workspace(tmp_path)
    log = run("snakemake -n -p all_tables --cores 2 --configfile tests/configs/tiny.yaml", ws)
    rules = {}
    for block in re.split(r"\n(?=\[.*\]\n)?rule ", log)[1:]:
        name = block.split(":")[0].strip()
        if name == "all_tables":
            continue
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)
        outputs = re.search(r"^\s+output: (.*)$", block, re.M)
        shell = re.search(r"^Shell command: hvc (\S+)", block, re.M)
        rules[name] = {
            "cmd": shell.group(1),
            "deps": {_kind(p) for p in inputs.group(1).split(", ")} if inputs else set(),
            "outs": {_kind(p) for p in outputs.group(1).split(", ")},
        }
    dvc = _dvc_stages()
    assert set(rules) == set(dvc) == STAGES
    for name in STAGES:
        assert rules[name]["cmd"] == dvc[name]["cmd"], name
        dvc_outs = {_kind(re.sub(r"\$\{(key|item)\}", "hvc", p)) for p in dvc[name]["outs"]}
        assert rules[name]["outs"] == dvc_outs, name
        dvc_deps = {_kind(re.sub(r"\$\{(key|item)\}", "hvc", p).replace("${item.model}", "artifacts/models/x")) for p in dvc[name]["deps"]}
        assert rules[name]["deps"] <= dvc_deps, name


def test_dvc_repro_and_experiments(tmp_path):
    ws = workspace(tmp_path, tiny_params=True)
    run("git init -q && dvc init -q && git add -A && git commit -qm init", ws)
    run("dvc repro", ws)
    scores = json.loads((ws / "metrics/hvc.json").read_text())
    assert 0 <= scores["demo"]["JF_mean"] <= 1
    assert (ws / "results/tables/demo.md").exists()
    assert "up to date" in run("dvc repro", ws)
    run("git add -A && git commit -qm baseline", ws)
    run("dvc exp run -S train.lr=0.002", ws)
    shown = json.loads(_exp_show_json(ws))
    rows = []
    for commit in shown:
        for exp in [commit] + [e for e in commit.get("experiments") or [] for e in e.get("revs", [])]:
            data = (exp.get("data") or {})
            metrics = data.get("metrics", {}).get("metrics/hvc.json", {}).get("data", {})
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            if metrics:
                rows.append((params["train"]["lr"], metrics["demo"]["JF_mean"]))
    lrs = sorted(lr for lr, _ in rows)
    assert 0.001 in lrs and 0.002 in lrs, rows


def _exp_show_json(ws):
    out = subprocess.run("dvc exp show --json", cwd=ws, shell=True, capture_output=True, text=True, check=True).stdout
    return out
