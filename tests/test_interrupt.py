"""Nothing half-written: a workflow killed with SIGKILL anywhere finishes, on re-run, with
the results of a run that was never interrupted.

Two copies of the workflow run the tiny setting: copy A once, uninterrupted; copy B is
killed (SIGKILL to Snakemake and every process below it, as the OOM killer, a cluster's
time limit or a node failure would) while each stage is writing its output, then re-run
with ``--rerun-incomplete`` until it completes. A kill is timed by polling for the stage's
temporary output (``.<id>.<pid>@<host>.*.tmp``, :func:`hvc.io.atomic_dir`) or, for
training, for the resumable checkpoint in ``.<id>.work/`` written after step 1 of 2.

After every kill, each output folder that exists must be complete; at the end the tables,
the score files, the predicted masks and the trained encoder of B equal A's byte for byte
(training on the CPU is deterministic for a seed, and resumes exactly), and no temporary
is left behind.

A and B run at the same time to keep the test near 2-3 minutes on a 2-core machine.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from hvc.io import read_json, sha256_file
from workflow_copy import copy_workflow

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# The tiny setting, with a checkpoint after every step (so a kill can land between the two
# training steps and the re-run resumes) and without the random baseline (two jobs fewer).
EXTRA_CONFIG = "baselines: []\ntrain:\n  checkpoint_every: 1\n"
COMMAND = ["snakemake", "all_tables", "--cores", "1", "--configfile", "tests/configs/tiny.yaml", "interrupt.yaml"]

# (stage, what appears while it writes its output), in the order the stages run.
KILL_POINTS = [
    ("demo_data", "artifacts/data/.*.tmp"),
    ("shards", "artifacts/shards/.*.tmp"),
    ("train", "artifacts/models/.*.work/checkpoint.pt"),
    ("propagate", "artifacts/predictions/*/*/.*.tmp"),
]


def workspace(tmp_path: Path, name: str) -> Path:
    ws = copy_workflow(tmp_path / name)
    (ws / "interrupt.yaml").write_text(EXTRA_CONFIG)
    return ws


def start(ws: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*COMMAND, *extra], cwd=ws, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL Snakemake's process group and every descendant, wherever its group."""
    try:
        family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [proc.pid]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    for pid in family:  # gone, not just signalled, before the re-run looks at the files
        try:
            psutil.Process(pid).wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
            pass


def run_until_kill(ws: Path, log: Path, points: list[tuple[str, str]], timeout: float = 240) -> str | None:
    """Run the workflow; SIGKILL it as soon as one of ``points`` shows. Returns that stage,
    or None when the run ended first (then it must have succeeded)."""
    before = {pattern: set(ws.glob(pattern)) for _, pattern in points}  # e.g. a resumable checkpoint
    # --nolock stands for the `snakemake --unlock` a user runs after a kill (SIGKILL leaves
    # Snakemake's own lock behind); --rerun-incomplete re-runs the jobs it was running.
    proc = start(ws, log, "--rerun-incomplete", "--nolock")
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        for stage, pattern in points:
            if set(ws.glob(pattern)) - before[pattern]:
                kill_tree(proc)
                return stage
        if time.monotonic() > deadline:
            kill_tree(proc)
            raise AssertionError(f"workflow still running after {timeout} s; log: {log}")
        time.sleep(0.005)
    assert proc.returncode == 0, f"workflow failed ({proc.returncode}):\n{log.read_text()[-4000:]}"
    return None


def assert_outputs_complete(ws: Path) -> None:
    """Every output folder that exists is complete (temporaries are hidden, never outputs)."""
    for d in (ws / "artifacts" / "data").glob("[!.]*"):
        manifest = read_json(d / "manifest.json")
        seqs = manifest["benchmark"]["sequences"]
        assert len(list((d / "train").iterdir())) == manifest["train"]["num_images"], d
        for s in seqs:
            assert len(list((d / "benchmark/JPEGImages/480p" / s["name"]).glob("*.jpg"))) == s["num_frames"], d
            assert len(list((d / "benchmark/Annotations/480p" / s["name"]).glob("*.png"))) == s["num_frames"], d
        assert (d / "benchmark/ImageSets/2017/val.txt").read_text().split() == [s["name"] for s in seqs]
    for d in (ws / "artifacts" / "shards").glob("[!.]*"):
        index = read_json(d / "index.json")
        assert (d / "report.json").is_file(), d
        assert index["shards"], d
        for s in index["shards"]:
            assert sha256_file(d / s["name"]) == s["sha256"], d
    for d in (ws / "artifacts" / "models").glob("[!.]*"):
        for name in ("encoder.pt", "checkpoint.pt", "train.json"):
            assert (d / name).is_file(), (d, name)
        torch.load(d / "encoder.pt", map_location="cpu", weights_only=True)
    for d in (ws / "artifacts" / "predictions").glob("*/*/[!.]*"):
        info = read_json(d / "propagation.json")
        pngs = list(d.glob("*/*.png"))
        assert len({p.parent.name for p in pngs}) == info["videos"], d
        assert len(pngs) == info["frames"] + info["videos"], d  # every frame, the first included
    for f in (ws / "artifacts" / "scores").glob("*/*/[!.]*.json"):
        json.loads(f.read_text())
    tables = ws / "results" / "tables" / "latest"
    if tables.exists():
        assert all((tables / f"demo.{ext}").is_file() for ext in ("md", "csv", "tex")), tables


def leftovers(ws: Path) -> list[str]:
    """Hidden temporaries and work folders under artifacts/ and results/."""
    found = []
    for top in ("artifacts", "results"):
        for p in (ws / top).rglob(".*"):
            if p.name != ".snakemake_timestamp":
                found.append(str(p.relative_to(ws)))
    return sorted(found)


def relative_files(folder: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.glob(pattern) if p.is_file())


def test_killed_workflow_reruns_to_identical_results(tmp_path):
    a, b = workspace(tmp_path, "a"), workspace(tmp_path, "b")
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    tic = time.monotonic()
    run_a = start(a, log_a)  # the uninterrupted reference, alongside B
    try:
        remaining, hit = list(KILL_POINTS), []
        while True:
            stage = run_until_kill(b, log_b, remaining)
            if stage is None:
                break
            hit.append(stage)
            remaining = remaining[[s for s, _ in remaining].index(stage) + 1 :]
            assert_outputs_complete(b)
        assert run_a.wait(timeout=max(1.0, 480 - (time.monotonic() - tic))) == 0, log_a.read_text()[-4000:]
    finally:
        if run_a.poll() is None:
            kill_tree(run_a)
    print(f"killed during {hit}; {time.monotonic() - tic:.0f} s")
    # The training kill is timed on a file only a half-done training run has: it must have hit,
    # and so must the kills of the longer stages.
    assert {"demo_data", "train", "propagate"} <= set(hit), (hit, log_b.read_text()[-4000:])

    assert_outputs_complete(a)
    assert_outputs_complete(b)
    assert leftovers(b) == [], leftovers(b)  # killed runs' temporaries removed by the re-runs

    assert (a / "results/tables/latest/demo.csv").read_bytes() == (b / "results/tables/latest/demo.csv").read_bytes()
    assert (a / "results/tables/latest/demo.md").read_bytes() == (b / "results/tables/latest/demo.md").read_bytes()
    scores = relative_files(a, "artifacts/scores/**/*.json")
    assert scores and scores == relative_files(b, "artifacts/scores/**/*.json")
    for f in scores:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    masks = relative_files(a, "artifacts/predictions/**/*.png")
    assert masks and masks == relative_files(b, "artifacts/predictions/**/*.png")
    _, mismatch, errors = filecmp.cmpfiles(a, b, masks, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    encoders = relative_files(a, "artifacts/models/*/encoder.pt")
    assert len(encoders) == 1 and encoders == relative_files(b, "artifacts/models/*/encoder.pt")
    wa = torch.load(a / encoders[0], map_location="cpu", weights_only=True)
    wb = torch.load(b / encoders[0], map_location="cpu", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "training did not resume exactly"
