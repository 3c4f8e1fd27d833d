"""What a results folder says about itself: params.yaml beside every stage's outputs, the
ids `hvc plan --set` prints, tables captioned with their settings and kept per experiment
set, the tidy runs.csv, and the loss curves of every trained model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hvc.cli import app
from hvc.config.ids import stage_config, stage_ids
from hvc.config.params import load_params, parse_overrides
from hvc.config.plan import plan, score_requests
from hvc.config.record import RECORD_NAME, experiment_set_id
from hvc.io import atomic_dir, sidecar_files

ROOT = Path(__file__).resolve().parents[1]
TINY = [ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]


def _hvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hvc.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_folder_gets_its_sidecar_only_when_it_is_complete(tmp_path):
    with sidecar_files({RECORD_NAME: "stage: x\n"}):
        with atomic_dir(tmp_path / "ok") as tmp:
            (tmp / "out.txt").write_text("1")
        with pytest.raises(RuntimeError), atomic_dir(tmp_path / "failed") as tmp:
            (tmp / "out.txt").write_text("1")
            raise RuntimeError("killed")
    with atomic_dir(tmp_path / "plain") as tmp:
        (tmp / "out.txt").write_text("1")
    assert (tmp_path / "ok" / RECORD_NAME).read_text() == "stage: x\n"
    assert not (tmp_path / "failed").exists() and not (tmp_path / "plain" / RECORD_NAME).exists()


@pytest.mark.timeout(300)
def test_every_stage_folder_holds_its_exact_parameters_and_provenance(tmp_path):
    """demo-data, shards and train on the tiny setting with an override: each folder's
    params.yaml holds the id the workflow names it by, the mapping that id hashes, the
    files and overrides, and the code hash."""
    files = ["--params", str(TINY[0]), "--params", str(TINY[1]), "--set", "hvc.alpha=0.5"]
    p = load_params(TINY, parse_overrides(["hvc.alpha=0.5"]))
    ids = stage_ids(p)
    _hvc("demo-data", *files, "--out", "data", cwd=tmp_path)
    _hvc("shards", *files, "--input", "data", "--out", "shards", cwd=tmp_path)
    _hvc("train", *files, "--shards", "shards", "--out", "model", "--threads", "1", cwd=tmp_path)
    for folder, stage in (("data", "demo_data"), ("shards", "shards"), ("model", "train")):
        record = yaml.safe_load((tmp_path / folder / RECORD_NAME).read_text())
        assert record["stage"] == stage and record["id"] == ids[stage], folder
        assert record["params"] == json.loads(json.dumps(stage_config(stage, p), default=str)), folder
        assert record["given"] == {"files": [str(f) for f in TINY], "overrides": ["hvc.alpha=0.5"]}
        assert record["provenance"]["code_hash"] and record["provenance"]["stage"] == stage
    model = yaml.safe_load((tmp_path / "model" / RECORD_NAME).read_text())
    assert model["params"]["params"]["hvc.alpha"] == 0.5 and model["shards"] == "shards"


def test_plan_takes_overrides_and_prints_every_id(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    args = ["plan", "-p", str(TINY[0]), "-p", str(TINY[1]), "--set", "hvc.alpha=0.5"]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "250"}).output
    p = load_params(TINY, parse_overrides(["hvc.alpha=0.5"]))
    ids = stage_ids(p)
    for value in (ids["shards"], ids["train"], ids["propagate"], ids["evaluate"], experiment_set_id(p)):
        assert value in out, (value, out)
    base = stage_ids(load_params(TINY))["train"]
    assert base not in out  # the override changed the model id


def _fake_scores(p, tmp_path: Path) -> list[str]:
    """--score arguments for every (experiment, source) of ``p``: score files and a train.json."""
    args = []
    for i, (key, source) in enumerate(score_requests(p)):
        path = tmp_path / "scores" / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if source == "train":
            summary = {"steps": 96, "train_seconds": 384.5, "images_per_s": 4.0, "peak_gpu_memory_gb": None,
                       "peak_host_memory_gb": 1.24, "device": "cpu", "provenance": {"code_hash": "abc123", "git_commit": "c0ffee"}}  # fmt: skip
        else:
            summary = {"JF_mean": 0.5 + i / 100, "J_mean": 0.5, "J_recall": 0.6, "J_decay": 0.1, "F_mean": 0.5, "F_recall": 0.6,
                       "F_decay": 0.1, "provenance": {"code_hash": "def456", "git_commit": "c0ffee"}}  # fmt: skip
        path.write_text(json.dumps(summary))
        args += ["--score", f"{key}:{source}={path}"]
    return args


def test_tables_are_kept_per_experiment_set_and_say_their_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for f in TINY:
        (tmp_path / f.name).write_text(f.read_text())
    files = ["--params", "params.yaml", "--params", "tiny.yaml"]
    written = {}
    for override in ("hvc.alpha=0.5", "hvc.alpha=2.0"):
        p = load_params(["params.yaml", "tiny.yaml"], parse_overrides([override]))
        set_id = experiment_set_id(p)
        out = Path("results/tables") / set_id
        args = ["tables", *files, "--set", override, *_fake_scores(p, tmp_path / set_id), "--out", str(out)]
        result = CliRunner().invoke(app, args + ["--latest", "results/tables/latest", "--runs-csv", "results/runs.csv"])
        assert result.exit_code == 0, result.output
        written[override] = (out, set_id)
        md = (out / "demo.md").read_text()
        assert f"Settings: params.yaml + tiny.yaml, --set {override} (experiment set {set_id})" in md
        assert f"experiment set {set_id}" in (out / "demo.tex").read_text() and set_id in (out / "demo.html").read_text()
        assert os.readlink("results/tables/latest") == set_id and Path("results/tables/latest/demo.md").read_text() == md
        record = yaml.safe_load((out / RECORD_NAME).read_text())
        assert record["experiment_set"] == set_id and record["given"]["overrides"] == [override]
        assert Path("results/runs.csv").read_bytes() == (out / "runs.csv").read_bytes()
    (first, _), (second, _) = written.values()
    assert first != second and (first / "demo.md").is_file()  # the other set's tables are still there
    assert "hvc.alpha=0.5" in (first / "demo.md").read_text() and "hvc.alpha=2.0" in (second / "demo.md").read_text()


def test_runs_csv_is_tidy_and_numeric(tmp_path):
    from hvc.report.tables import runs_frame

    p = load_params(TINY, parse_overrides(["ablations=[table7c]", "data.benchmarks=[demo,davis2016]"]))
    scores = {}
    for i, (key, source) in enumerate(score_requests(p)):
        if source == "train":
            scores[(key, source)] = {"steps": 2, "train_seconds": 3.5, "images_per_s": 2.3, "peak_gpu_memory_gb": None,
                                     "peak_host_memory_gb": 1.2, "device": "cpu", "provenance": {"code_hash": f"m{i}"}}  # fmt: skip
        else:
            scores[(key, source)] = {"JF_mean": 0.4, "J_mean": 0.3, "F_mean": 0.5, "provenance": {"code_hash": "e1", "git_commit": "abc"}}
    path = tmp_path / "runs.csv"
    runs_frame(p, scores).to_csv(path, index=False)
    df = pd.read_csv(path)
    experiments = plan(p)
    benches = {(k, s) for k, s in scores if s != "train"}
    assert len(df) == len(benches) and set(zip(df["experiment"], df["benchmark"])) == benches  # one row per (experiment, benchmark)
    assert "hvc.alpha" in df.columns and "train.lr" not in df.columns  # only what differs between runs
    assert sorted(df["hvc.alpha"].unique()) == [0.1, 0.5, 1.0, 2.0]
    for column in ("score", "JF_mean", "J_mean", "F_mean", "steps", "train_seconds", "images_per_s", "peak_host_memory_gb", "hvc.alpha"):
        assert pd.api.types.is_numeric_dtype(df[column]), column
    hvc = df[(df.experiment == "hvc") & (df.benchmark == "davis2016")].iloc[0]
    assert hvc["headline"] == "JF_mean" and hvc["score"] == 0.4 and hvc["model_id"] == experiments["hvc"].ids["train"]
    assert hvc["model_code"].startswith("m") and hvc["evaluation_code"] == "e1" and hvc["steps"] == 2
    random = df[df.experiment == "random"].iloc[0]
    assert not random["trained"] and pd.isna(random["steps"])  # a baseline has no training cost


def test_dvcignore_leaves_bytecode_out_of_the_package_hash(tmp_path):
    """The `plan` stage depends on the package folder: with the checked-in .dvcignore, DVC
    ignores __pycache__ and *.pyc in it (`dvc check-ignore`)."""
    from hvc.config.dvc import DVCIGNORE_PATTERNS, ensure_dvcignore

    text = (ROOT / ".dvcignore").read_text()
    assert all(p in text.splitlines() for p in DVCIGNORE_PATTERNS)
    assert not ensure_dvcignore(ROOT)  # nothing to add to the checked-in file
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    assert ensure_dvcignore(tmp_path) and not ensure_dvcignore(tmp_path)
    (tmp_path / "hvc" / "__pycache__").mkdir(parents=True)
    for name in ("hvc/__pycache__/io.cpython-312.pyc", "hvc/io.pyc", "hvc/io.py"):
        (tmp_path / name).write_text("x")
    proc = subprocess.run(["dvc", "check-ignore", "hvc/__pycache__/io.cpython-312.pyc", "hvc/io.pyc", "hvc/io.py"],
                          cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert proc.stdout.split() == ["hvc/__pycache__/io.cpython-312.pyc", "hvc/io.pyc"], proc.stdout + proc.stderr


def test_dvc_compute_stages_pass_threads_as_the_rules_do(tmp_path, monkeypatch):
    from hvc.config.dvc import COMPUTE_THREADS, dvc_stages

    monkeypatch.chdir(ROOT)
    p = load_params(["params.yaml", "configs/compare.yaml"])
    stages = dvc_stages(["params.yaml", "configs/compare.yaml"], p)
    for name, st in stages.items():
        kind = name.split("-")[0]
        if kind == "train":
            assert st["cmd"].endswith(f"--threads {1 + p.train.workers}"), name  # main process + loader workers
        elif kind in ("propagate", "evaluate", "flow", "figures"):
            assert f"--threads {COMPUTE_THREADS}" in st["cmd"], name
    figures = stages["figures"]["cmd"]
    models = [n for n in stages if n.startswith("train-")]
    assert figures.count("--curves ") == len(models) == 6  # hvc, LIIR's table row, the four budget runs (HVC, LIIR, STT, Mask-VOS; a generic row shares its model)
    assert "--predictions budget-liir:demo=" in figures  # an overlay of LIIR's predictions too


def test_usable_cores_bound_the_threads(monkeypatch):
    import torch

    from hvc import cli

    before = torch.get_num_threads()
    monkeypatch.setattr(cli, "_usable_cores", lambda: 1)
    try:
        cli._set_threads(8)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_fetch_list_shows_terms_without_maintainers_notes():
    out = CliRunner().invoke(app, ["fetch", "--list"], env={"COLUMNS": "250"}).output
    for internal in ("verify]", "re-read", "../shared", "sources available to us", "["):
        assert internal not in out, internal
    assert "CC BY 4.0" in out and "https://" in out and "read the homepage" in out


def _dvclive_loss(model: Path, steps: list[int], values: list[float]) -> Path:
    metrics = model / "dvclive" / "plots" / "metrics" / "train"
    metrics.mkdir(parents=True)
    rows = ["timestamp\tstep\tloss"] + [f"0\t{s}\t{v}" for s, v in zip(steps, values)]
    (metrics / "loss.tsv").write_text("\n".join(rows) + "\n")
    return model


def test_loss_curves_draw_every_model_at_its_optimizer_steps(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from hvc.report.figures import curve_label, loss_curves, read_curve

    hvc = _dvclive_loss(tmp_path / "hvc", [5, 10, 15], [3.0, 2.5, 2.0])
    liir = _dvclive_loss(tmp_path / "liir", [5, 10], [1.0, 0.8])
    assert read_curve(hvc) == ([5, 10, 15], [3.0, 2.5, 2.0])
    labels = [curve_label("hvc", "hvc"), curve_label("method=liir,propagation.preset=liir", "liir"), curve_label("budget-liir", "liir")]
    assert labels == ["HVC: base", "LIIR: propagation.preset=liir", "LIIR: equal budget"]
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    assert loss_curves([(labels[0], hvc), (labels[1], liir), ("none", tmp_path / "untrained")], tmp_path / "loss.png")
    (ax,) = closed[0].axes
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    assert lines == {"HVC: base": [5, 10, 15], "LIIR: propagation.preset=liir": [5, 10]}
    assert ax.get_xlabel() == "optimizer step" and (tmp_path / "loss.png").stat().st_size > 0
    assert not loss_curves([("none", tmp_path / "untrained")], tmp_path / "none.png")


def test_bar_chart_leaves_out_rows_without_a_value_of_ours(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from hvc.report.figures import bar_chart

    table = {"title": "t", "header": ["Setting", "DAVIS16 J&F (ours)", "DAVIS16 J&F (paper)"], "formats": ["", ".1f", ".1f"],
             "rows": [["HVC", 50.0, 80.1], ["ImageNet", None, None], ["Random", 20.0, None]]}  # fmt: skip
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    assert bar_chart(table, tmp_path / "bars.png")
    (ax,) = closed[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["HVC", "Random"]  # no empty slot for ImageNet


def test_budget_plot_title_fits_in_the_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from hvc.report.figures import budget_plot

    title = "Equal budget: 1,024 training samples per method on demo, scored on Demo with a long training-set name"
    points = [{"method": "hvc", "jf": 0.5, "seconds": 10.0}, {"method": "liir", "jf": 0.4, "seconds": 20.0}]
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    assert budget_plot({"title": title, "points": points}, tmp_path / "budget.png")
    fig = closed[0]
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, fig.bbox.width)  # not cut at the edges


def test_every_trained_method_gets_an_overlay():
    from hvc.config.plan import overlay_keys

    p = load_params([ROOT / "params.yaml", ROOT / "configs" / "compare.yaml"])
    experiments = plan(p)
    keys = overlay_keys(experiments, set(score_requests(p)), p.data.benchmarks)
    assert keys[:2] == ["hvc", "random"] and {experiments[k].params.method for k in keys if experiments[k].trained} == {"hvc", *p.compare}
    assert len(p.compare) >= 3  # the comparison config holds every peer method
