"""The whole chain through both entry points (Snakemake and DVC) on the tiny demo setting
and on tiny datasets in real benchmark and training-set layouts.

Each test copies the workflow (and, for DVC, the package: its files are stage dependencies)
into a temporary folder and runs the real commands: data → shards → train → propagate →
evaluate → tables, then checks caching (a second run does nothing; a training parameter
re-runs only training and what follows), that both tools plan the same jobs, and that
`dvc exp show` compares two settings.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hvc.config.code import code_hash
from hvc.config.ids import stage_ids
from hvc.config.params import deep_merge, load_params
from workflow_copy import copy_workflow, job_counts

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
STAGES = {"demo_data", "shards", "train", "propagate", "evaluate", "tables", "figures"}
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

pytestmark = pytest.mark.slow


def run(cmd, cwd, check=True, package=False):
    """Run a shell command in ``cwd``; ``package``: with the copy of the package in ``cwd``
    first on the path (DVC stages depend on its files)."""
    env = dict(os.environ, **GIT_ENV)
    if package:
        env.update(PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def workspace(tmp_path, tiny_params=False, extra=None):
    """The workflow in ``tmp_path/ws``; ``tiny_params``: a DVC project (git, the package, the
    tiny setting and ``extra`` merged into params.yaml, dvc.yaml generated from them)."""
    ws = copy_workflow(tmp_path / "ws")
    if tiny_params:  # one params.yaml, the file `dvc exp run -S` edits
        merged = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(TINY.read_text()))
        (ws / "params.yaml").write_text(yaml.safe_dump(deep_merge(merged, extra or {}), sort_keys=False))
        shutil.copytree(ROOT / "hvc", ws / "hvc", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / ".gitignore", ws / ".gitignore")
        run("git init -q && dvc init -q && hvc dvc-yaml", ws, package=True)
        shutil.copy(ROOT / ".dvcignore", ws / ".dvcignore")  # no __pycache__ in the package's hash
        run("git add -A && git commit -qm init", ws)
    return ws


def test_snakemake_demo_runs_caches_and_reruns_only_dependents(tmp_path):
    ws = workspace(tmp_path)
    smk = "snakemake all_tables --cores 2 --configfile tests/configs/tiny.yaml"
    run(smk, ws)
    table = (ws / "results/tables/latest/demo.md").read_text()
    assert "HVC (trained)" in table and "Random init" in table
    values = re.findall(r"\| +(-?\d+\.\d)(?= \|)", table)
    assert len(values) >= 14  # 7 metrics x 2 encoders, real numbers
    assert (ws / "results/tables/latest/demo.csv").exists() and (ws / "results/tables/latest/demo.tex").exists()
    assert (ws / "results/figures/latest/hvc_demo.png").exists()
    assert (ws / "results/figures/latest/loss_curves.png").exists()  # every model's loss against the optimizer step
    set_id = os.readlink(ws / "results/tables/latest")
    assert f"(experiment set {set_id})" in table and os.readlink(ws / "results/figures/latest") == set_id
    runs = (ws / "results/runs.csv").read_text().splitlines()
    assert runs[0].startswith("experiment,trained,method,benchmark,headline,score,") and len(runs) == 3  # hvc, random on demo
    (model_dir,) = [d for d in ws.glob("artifacts/models/*") if not d.name.startswith(".")]
    record = yaml.safe_load((model_dir / "params.yaml").read_text())
    assert record["id"] == model_dir.name and record["stage"] == "train"
    print((ws / "results/runs.csv").read_text())
    print("\n".join(line for line in (ws / f"logs/train/{model_dir.name}.log").read_text().splitlines() if "heartbeat" in line))
    # the DAVIS toolkit's CSVs next to each encoder's scores; a log for every job
    toolkit = sorted(ws.glob("artifacts/scores/*/*/*/demo/global_results-val.csv"))  # encoder/propagation/evaluation
    assert len(toolkit) == 2 and toolkit[0].read_text().startswith("J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n")
    assert {p.parts[-2] if p.parent.name != "logs" else p.name for p in (ws / "logs").iterdir()} >= STAGES
    # every output JSON says which code made it, where
    (train_json,) = ws.glob("artifacts/models/*/train.json")
    provenance = json.loads(train_json.read_text())["provenance"]
    assert provenance["code_hash"] == code_hash("train")
    assert provenance["device"].startswith("cuda:" if torch.cuda.is_available() else "cpu")
    provenance = json.loads(toolkit[0].parent.with_suffix(".json").read_text())["provenance"]
    assert provenance["code_hash"] == code_hash("evaluate") and provenance["stage"] == "evaluate"
    assert list(ws.glob("logs/propagate/**/*.tsv")) and list(ws.glob("logs/train/*.log"))

    # the report: captioned tables and figures, and the run time of every job
    run("snakemake --report report.html --configfile tests/configs/tiny.yaml", ws)  # no target: all_tables
    report = (ws / "report.html").read_text()
    for needle in ("demo.html", "hvc_demo.png", "bars_demo.png", "loss_curves.png", "(paper)", "Tables", "Figures"):
        assert needle in report, needle

    assert "Nothing to be done" in run(f"{smk} -n", ws)

    (ws / "lr.yaml").write_text("train:\n  lr: 0.002\n")
    counts = job_counts(run("snakemake all_tables --cores 2 -n --configfile tests/configs/tiny.yaml lr.yaml", ws))
    assert counts == {"train": 1, "propagate": 1, "evaluate": 1, "tables": 1, "figures": 1, "all_tables": 1}

    (ws / "prop.yaml").write_text("propagation:\n  topk: 5\n")
    counts = job_counts(run("snakemake all_tables --cores 2 -n --configfile tests/configs/tiny.yaml prop.yaml", ws))
    assert counts == {"propagate": 2, "evaluate": 2, "tables": 1, "figures": 1, "all_tables": 1}

    # an override on the command line reaches every job (each stage subcommand takes --set)
    log = run(f"{smk} --config 'hvc={{alpha: 0.5}}'", ws)
    assert job_counts(log) == {"train": 1, "propagate": 1, "evaluate": 1, "tables": 1, "figures": 1, "all_tables": 1}
    assert "hvc.heartbeat" in log and "train step 2/2" in log  # the terminal shows the training's progress
    other = os.readlink(ws / "results/tables/latest")
    assert other != set_id and (ws / f"results/tables/{set_id}/demo.md").read_text() == table  # the first set's tables kept
    assert "--set hvc.alpha=0.5" in (ws / f"results/tables/{other}/demo.md").read_text()
    model = stage_ids(load_params([ws / "params.yaml", TINY], {"hvc": {"alpha": 0.5}}))["train"]
    assert (ws / f"artifacts/models/{model}/encoder.pt").is_file()  # the model of alpha 0.5, under its id
    assert "Nothing to be done" in run(f"{smk} -n --config 'hvc={{alpha: 0.5}}'", ws)


def _normalize(cmd):
    """A stage's command as (subcommand, sorted arguments) without the paths, which differ by
    design (content ids for Snakemake, experiment keys for DVC), the log redirection and
    Snakemake's --expect-id and --threads; a trained encoder becomes TRAINED."""
    paths = {"--out", "--input", "--shards", "--data", "--toolkit-csv", "--model", "--tables", "--demo",
             "--archive", "--server-scores", "--metrics", "--root", "--from", "--expect-id", "--threads", "--log", "--latest", "--runs-csv"}  # fmt: skip
    tokens = shlex.split(cmd)
    for stop in ("2>", "2>&1", "|"):
        tokens = tokens[: tokens.index(stop)] if stop in tokens else tokens
    if tokens[0] == "torchrun":
        tokens = ["hvc"] + tokens[tokens.index("hvc.cli") + 1 :]
    sub, rest, out, i = tokens[1], tokens[2:], [], 0
    while i < len(rest):
        tok = rest[i]
        value = rest[i + 1] if i + 1 < len(rest) and not rest[i + 1].startswith("--") else None
        if tok in paths:
            i += 2
            continue
        if tok == "--encoder":
            value = "TRAINED" if value.endswith("encoder.pt") else value
        elif tok in ("--score", "--predictions", "--curves"):
            value = value.rpartition("=")[0]  # KEY:SOURCE=PATH
        out.append(tok if value is None else f"{tok} {value}")
        i += 1 if value is None else 2
    return sub, tuple(sorted(out))


def test_snakemake_and_dvc_run_the_same_jobs(tmp_path):
    """For the paper's setting with ablation tables, both baselines, the authors' and the
    semantic checkpoints and every kind of benchmark, each Snakemake job has one DVC stage
    calling the same subcommand with the same arguments (paths aside)."""
    ws = workspace(tmp_path)
    shutil.copy(ROOT / "configs/paper.yaml", ws / "paper.yaml")
    (ws / "ckpt").mkdir()
    (ws / "ckpt/hvc_coco.pth").touch()
    (ws / "ckpt/moco.pth").touch()
    (ws / "grid.yaml").write_text(
        "ablations: [table6, table7c, table7e]\nbaselines: [random, imagenet]\nauthors_checkpoint: ckpt/hvc_coco.pth\n"
        "data:\n  benchmarks: [davis2017, davis2016, vost, vip, jhmdb, ytvos2018, demo]\n"
        "propagation:\n  semantic_checkpoint: ckpt/moco.pth\n"
    )
    log = run("snakemake -n -p all_tables --cores 2 --configfile paper.yaml grid.yaml", ws)
    snakemake = Counter(_normalize(m) for m in re.findall(r"^Shell command: ((?:hvc|torchrun) .*)$", log, re.M))
    run("hvc dvc-yaml -p params.yaml -p paper.yaml -p grid.yaml", ws)
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    dvc = Counter(_normalize(st["cmd"]) for name, st in stages.items() if name != "plan")
    assert sum(snakemake.values()) > 150  # 10 fetch, 9 train, 68 propagate and evaluate, ...
    assert {sub for sub, _ in snakemake} == {
        "fetch", "demo-data", "shards", "train", "propagate", "evaluate", "submission", "flow", "tables", "figures"
    }  # fmt: skip
    assert dvc == snakemake, {k: (snakemake[k], dvc[k]) for k in set(dvc) | set(snakemake) if dvc[k] != snakemake[k]}


def _exp_rows(ws, metric_file):
    """(hvc.alpha, J&F) of every experiment ``dvc exp show --json`` lists with that metric."""
    shown = json.loads(_exp_show_json(ws))
    rows = []
    for commit in shown:
        for exp in [commit] + [e for e in commit.get("experiments") or [] for e in e.get("revs", [])]:
            data = exp.get("data") or {}
            metrics = data.get("metrics", {}).get(metric_file, {}).get("data", {})
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            if metrics:
                rows.append((params["hvc"]["alpha"], metrics["J&F"]))
    return rows


def _exp_show_json(ws):
    env = dict(os.environ, PYTHONPATH=str(ws))
    return subprocess.run("dvc exp show --json", cwd=ws, shell=True, capture_output=True, text=True, check=True, env=env).stdout


def test_dvc_repro_and_experiments(tmp_path):
    ws = workspace(tmp_path, tiny_params=True)
    run("dvc repro", ws, package=True)
    hvc, random = (json.loads((ws / f"metrics/{k}/demo.json").read_text()) for k in ("hvc", "random"))
    assert set(hvc) == set(random) == {"J&F"} and 0 <= hvc["J&F"] <= 1
    assert (ws / "results/dvc/tables/demo.md").exists() and (ws / "results/dvc/figures/hvc_demo.png").exists()
    # DVC's outputs stay under its own roots: nothing where Snakemake writes
    assert sorted(p.name for p in (ws / "artifacts").iterdir()) == ["dvc"]
    assert sorted(p.name for p in (ws / "results").iterdir()) == ["dvc"]
    assert "up to date" in run("dvc repro", ws, package=True)
    run("git add -A && git commit -qm baseline", ws)

    log = run("dvc exp run -S hvc.alpha=0.5", ws, package=True)
    assert "Stage 'shards-hvc' didn't change" in log and "Running stage 'train-hvc'" in log
    rows = _exp_rows(ws, "metrics/hvc/demo.json")
    assert sorted(alpha for alpha, _ in rows) == [0.5, 0.5, 1.0], rows  # workspace, the experiment, the baseline
    assert len(_exp_rows(ws, "metrics/random/demo.json")) == 3

    # a parameter change the plan depends on: the first stage stops with one line
    params = (ws / "params.yaml").read_text().replace("- random", "- random\n- imagenet")
    (ws / "params.yaml").write_text(params)
    proc = subprocess.run("dvc repro", cwd=ws, shell=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ws)))
    assert proc.returncode != 0
    assert "dvc.yaml is stale for these parameters (stages missing: propagate-imagenet-demo" in proc.stdout + proc.stderr


def _davis2016(folder, sequences=("blackswan", "cows"), frames=4):
    """A tiny DAVIS 2016 folder: DAVIS/JPEGImages/480p, greyscale 0/255 masks in
    DAVIS/Annotations/480p, DAVIS/ImageSets/480p/val.txt listing frame/mask pairs."""
    rng = np.random.default_rng(0)
    lines = []
    davis = folder / "DAVIS"
    for seq in sequences:
        for t in range(frames):
            frame = davis / "JPEGImages/480p" / seq / f"{t:05d}.jpg"
            mask = davis / "Annotations/480p" / seq / f"{t:05d}.png"
            frame.parent.mkdir(parents=True, exist_ok=True)
            mask.parent.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            image[10:26, 10 + 2 * t : 30 + 2 * t] = (200, 40, 40)
            Image.fromarray(image).save(frame)
            labels = np.zeros((48, 64), np.uint8)
            labels[10:26, 10 + 2 * t : 30 + 2 * t] = 255
            Image.fromarray(labels, mode="L").save(mask)
            lines.append(f"/JPEGImages/480p/{seq}/{t:05d}.jpg /Annotations/480p/{seq}/{t:05d}.png")
    (davis / "ImageSets/480p").mkdir(parents=True)
    (davis / "ImageSets/480p/val.txt").write_text("\n".join(lines) + "\n")
    return folder


def _msra10k(folder, n=16):
    """A tiny MSRA10K folder: MSRA10K_Imgs_GT/Imgs/<n>.jpg."""
    rng = np.random.default_rng(1)
    imgs = folder / "MSRA10K_Imgs_GT/Imgs"
    imgs.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(imgs / f"{i}.jpg")
    return folder


def test_dvc_repro_on_real_dataset_layouts(tmp_path):
    """Not the demo: DAVIS 2016 as the benchmark and MSRA10K as the training set, both
    linked from a lab's folders by the fetch stages (data.sources), with Table 6's ablation
    rows trained as their own stages; the tables hold every row."""
    lab = tmp_path / "lab"
    extra = {
        "data": {"benchmarks": ["davis2016"], "train_set": "msra10k",
                 "sources": {"davis2016": str(_davis2016(lab / "davis2016")), "msra10k": str(_msra10k(lab / "msra10k"))}},
        "ablations": ["table6"],
    }  # fmt: skip
    ws = workspace(tmp_path, tiny_params=True, extra=extra)
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert "demo_data" not in stages
    assert {"fetch-davis2016", "fetch-msra10k", "train-hvc", "train-hvc_static-false", "train-hvc_dynamic-false"} <= set(stages)
    run("dvc repro", ws, package=True)
    assert (ws / "data/davis2016/DAVIS").resolve() == (lab / "davis2016/DAVIS").resolve()
    for key in ("hvc", "random", "hvc_static-false", "hvc_dynamic-false"):
        assert 0 <= json.loads((ws / f"metrics/{key}/davis2016.json").read_text())["J&F"] <= 1, key
    table = (ws / "results/dvc/tables/table6.md").read_text()
    assert len(re.findall(r"\| +(\d+\.\d)(?= \|)", table)) >= 3, table  # static only, dynamic only, both
    assert "up to date" in run("dvc repro", ws, package=True)
    # each ablation model trained with its own setting, read from params.yaml and its --set
    assert json.loads((ws / "artifacts/dvc/models/hvc/train.json").read_text())["steps"] == 2  # tiny: max_steps 2
    ran = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert "--set hvc.static=false" in ran["train-hvc_static-false"]["cmd"]
    assert "hvc" not in ran["train-hvc_static-false"]["params"]["params.yaml"]  # key by key, less hvc.static


def test_dvc_experiments_retrain_only_the_method_whose_section_changed(tmp_path):
    """The equal-budget comparison under DVC: `dvc exp run -S liir.<key>` re-trains LIIR's
    models and no HVC model; `-S hvc.alpha` re-trains HVC's and no LIIR model (each
    method's section is a param of its own train stages only)."""
    compare = yaml.safe_load((ROOT / "tests/configs/tiny_compare.yaml").read_text())
    ws = workspace(tmp_path, tiny_params=True, extra=compare)
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    liir_trains = sorted(n for n, st in stages.items() if n.startswith("train-") and "method=liir" in st["cmd"].replace("'", ""))
    hvc_trains = sorted(n for n in stages if n.startswith("train-") and n not in liir_trains)
    assert liir_trains == ["train-budget-liir", "train-method-liir"] and hvc_trains == ["train-budget-hvc", "train-hvc"]
    run("dvc repro", ws, package=True)
    run("git add -A && git commit -qm baseline", ws)

    def ran(log):
        return {n for n in stages if n.startswith("train-") and f"Running stage '{n}'" in log}

    log = run("dvc exp run -S liir.bank_frames=4", ws, package=True)
    assert ran(log) == set(liir_trains), log[-3000:]
    log = run("dvc exp run -S hvc.alpha=0.5", ws, package=True)
    assert ran(log) == set(hvc_trains), log[-3000:]


HEARTBEAT = re.compile(r"train step (\d+)/(\d+) .*?\| ([\d.]+) images/s \|")


def steady_seconds_per_step(log: str, batch: int, every: int) -> float:
    """Seconds per optimiser step of a training's steady state, from its heartbeat lines (one
    every ``every`` steps, each with the images/s of its window): the windows after the first
    (which holds the start-up: the loader worker, the first allocations) at ``batch``
    images per step."""
    windows = [float(m.group(3)) for m in HEARTBEAT.finditer(log)][1:]
    assert windows, log[-2000:]
    return sum(every * batch / ips for ips in windows) / (every * len(windows))


@pytest.mark.timeout(1800)
def test_dvc_trains_at_snakemakes_speed(tmp_path):
    """The same training job through DVC (`dvc repro train-hvc`) and Snakemake on the same
    machine: the DVC stage passes --threads as the rule does, so idle OpenMP threads sleep
    in both, and the steady-state seconds per step (heartbeat windows after the first) agree
    within 25 %. Each tool trains three times, in the balanced order D S S D D S, and its
    fastest run counts (the CPU may be shared with other jobs, whose load comes and goes)."""
    batch, every, steps = 8, 4, 20
    extra = {"train": {"max_steps": steps, "batch_size": batch, "crop_size": 64, "workers": 1, "log_every": every}}
    ws = workspace(tmp_path, tiny_params=True, extra=extra)
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert stages["train-hvc"]["cmd"].endswith("--threads 2")  # 1 + train.workers, as the Snakemake rule
    model = stage_ids(load_params(ws / "params.yaml"))["train"]
    commands = {"dvc": "dvc repro -f -s train-hvc", "snakemake": f"snakemake --cores 2 --forcerun train artifacts/models/{model}"}
    outputs = {"dvc": ws / "artifacts/dvc/models/hvc/train.json", "snakemake": ws / f"artifacts/models/{model}/train.json"}
    run("dvc repro shards-hvc", ws, package=True)
    run(f"snakemake --cores 2 artifacts/models/{model}", ws, package=True)  # its data and shards, and a first training
    per_step: dict[str, list[float]] = {"dvc": [], "snakemake": []}
    logs = []
    for tool in ("dvc", "snakemake", "snakemake", "dvc", "dvc", "snakemake"):
        logs.append(run(commands[tool], ws, package=True))
        assert json.loads(outputs[tool].read_text())["steps"] == steps
        per_step[tool].append(steady_seconds_per_step(logs[-1], batch, every))
    print(f"s/step: {per_step}")
    best = {tool: min(times) for tool, times in per_step.items()}
    assert abs(best["dvc"] / best["snakemake"] - 1) <= 0.25, per_step
    assert "using 2 CPU threads" in (ws / f"logs/train/{model}.log").read_text()
    assert "hvc.heartbeat" in logs[1] and f"train step {steps}/{steps}" in logs[1]  # Snakemake shows the heartbeat on its terminal
