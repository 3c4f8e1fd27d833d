"""Sweeps (``sweep: {dotted key: [values]}``) and seeds (``seeds: [0, 1, 2]``): the experiments
they plan (keys, overrides, content ids), their validation, the sweep table and mean ± std
over seeds in the tables and runs.csv (hand-made score summaries, no training), and one
Snakemake dry run."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from hvc.config.ids import stage_ids
from hvc.config.params import ParamsError, load_params, parse_overrides
from hvc.config.plan import plan, score_requests, seed_groups, sweep_experiments, table_names
from hvc.config.record import experiment_set_id
from hvc.report.seeds import MeanStd, aggregate_seeds
from hvc.report.tables import assemble, build_sweep_table, build_table, runs_frame, seed_scores, to_csv, to_markdown
from workflow_copy import copy_workflow, job_counts

ROOT = Path(__file__).resolve().parents[1]
TINY = [ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]


def tiny(*overrides: str):
    return load_params(TINY, parse_overrides(list(overrides)))


def fake_scores(p, jf=lambda i, key: 0.5) -> dict:
    """A summary for every (experiment, source) the tables of ``p`` read: J&F from ``jf``."""
    scores = {}
    for i, (key, source) in enumerate(score_requests(p)):
        if source == "train":
            scores[(key, source)] = {"steps": 2, "train_seconds": 3.0 + i, "images_per_s": 2.0, "peak_gpu_memory_gb": None,
                                     "peak_host_memory_gb": 1.5, "device": "cpu"}  # fmt: skip
        else:
            scores[(key, source)] = {"JF_mean": jf(i, key), "J_mean": 0.4, "F_mean": 0.6}
    return scores


# --------------------------------------------------------------------------- planning


def test_a_sweep_plans_one_experiment_per_value_keyed_by_its_override():
    p = tiny("sweep={hvc.alpha: [0.1, 0.5, 2.0]}")
    points = sweep_experiments(p)
    assert [pt for pt, _ in points] == [{"hvc.alpha": 0.1}, {"hvc.alpha": 0.5}, {"hvc.alpha": 2.0}]
    assert [e.key for _, e in points] == ["hvc.alpha=0.1", "hvc.alpha=0.5", "hvc.alpha=2.0"]
    for (point, exp) in points:
        assert exp.overrides == {"hvc": {"alpha": point["hvc.alpha"]}} and exp.params.hvc.alpha == point["hvc.alpha"]
        # the same id as a plain `--config 'hvc={alpha: ...}'` run: a value trained before is reused
        assert exp.ids == stage_ids(tiny(f"hvc.alpha={point['hvc.alpha']}"))
    models = {e.ids["train"] for _, e in points} | {stage_ids(tiny())["train"]}
    assert len(models) == 4  # three sweep models and the base model, each its own id
    experiments = plan(p)
    assert [k for k in experiments if experiments[k].trained] == ["hvc", "hvc.alpha=0.1", "hvc.alpha=0.5", "hvc.alpha=2.0"]
    assert table_names(p)[-1] == "sweep" and "sweep" not in table_names(tiny())
    assert {(e.key, src) for _, e in points for src in ("demo", "train")} <= set(score_requests(p))


def test_a_sweep_value_equal_to_the_base_is_the_base_experiment():
    base_alpha = tiny().hvc.alpha
    points = sweep_experiments(tiny(f"sweep={{hvc.alpha: [0.1, {base_alpha}]}}"))
    assert points[1][1].key == "hvc" and points[1][1].overrides == {} and points[1][1].ids == stage_ids(tiny())


def test_several_keys_give_the_grid_product_first_key_slowest():
    points = [pt for pt, _ in sweep_experiments(tiny("sweep={hvc.alpha: [0.1, 2.0], train.lr: [0.01, 0.0001]}"))]
    assert points == [
        {"hvc.alpha": 0.1, "train.lr": 0.01}, {"hvc.alpha": 0.1, "train.lr": 0.0001},
        {"hvc.alpha": 2.0, "train.lr": 0.01}, {"hvc.alpha": 2.0, "train.lr": 0.0001},
    ]  # fmt: skip
    keys = [e.key for _, e in sweep_experiments(tiny("sweep={hvc.alpha: [0.1, 2.0], train.lr: [0.01, 0.0001]}"))]
    assert keys[0] == "hvc.alpha=0.1,train.lr=0.01" and len(set(keys)) == 4


def test_a_propagation_key_sweep_reuses_the_model():
    points = sweep_experiments(tiny("sweep={propagation.topk: [3, 7]}"))
    base = stage_ids(tiny())
    assert all(e.ids["train"] == base["train"] for _, e in points)
    assert len({e.ids["propagate"] for _, e in points} | {base["propagate"]}) == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep={hvc.alpha: [0.1, oops]}", "sweep: hvc.alpha = 'oops': Input should be a valid number"),
        ("sweep={hvc.alpah: [0.1]}", "sweep: hvc.alpah: unknown key"),
        ("sweep={hvc: [0.1]}", "sweep: hvc: a whole section"),
        ("sweep={seed: [0, 1]}", "sweep: seed: cannot be swept: list the seeds in seeds"),
        ("sweep={train.batch_size: [0]}", "sweep: train.batch_size = 0: Input should be greater than or equal to 1"),
        ("sweep={hvc.alpha: 0.1}", "sweep.hvc.alpha = 0.1: Input should be a valid list"),
        ("sweep={hvc.alpha: []}", "sweep: hvc.alpha: expected a non-empty list"),
        ("sweep={hvc.alpha: [0.1, 0.1]}", "sweep: hvc.alpha: value 0.1 given twice"),
        ("seeds=[1, 2]", "seeds = [1, 2]: Value error, must include the global seed (seed = 0)"),
        ("seeds=[0, 1, 1]", "seed(s) [1] given twice"),
    ],
)
def test_bad_sweeps_and_seeds_stop_with_a_line_naming_the_key(override, message):
    with pytest.raises(ParamsError) as err:
        tiny(override)
    assert message in str(err.value), str(err.value)
    if override.startswith("sweep") and "valid list" not in message:
        assert "\n" not in str(err.value)  # one line


def test_a_key_no_experiment_stage_reads_cannot_be_swept():
    with pytest.raises(ParamsError, match=r"^sweep: eval.bound_th: read by no stage"):
        plan(tiny("sweep={eval.bound_th: [0.01, 0.02]}"))


def test_seeds_repeat_every_trained_experiment_with_its_own_ids():
    p = tiny("seeds=[0, 1, 2]", "ablations=[table7c]")
    experiments = plan(p)
    one = plan(tiny("ablations=[table7c]"))
    trained = [k for k, e in one.items() if e.trained]
    groups = seed_groups(experiments)
    assert set(groups) == set(trained)
    for key in trained:
        assert groups[key] == [key, f"{key}@seed=1", f"{key}@seed=2"]
        assert experiments[key].ids == one[key].ids  # the global seed's run keeps its ids
        assert experiments[f"{key}@seed=2"].params.seed == 2 and experiments[f"{key}@seed=2"].overrides["seed"] == 2
        models = {experiments[k].ids["train"] for k in groups[key]}
        assert len(models) == 3
    assert "random@seed=1" not in experiments  # baselines run at the global seed
    requests = set(score_requests(p))
    assert ("hvc@seed=2", "demo") in requests and ("hvc@seed=2", "train") in requests


def test_one_seed_changes_nothing():
    for overrides in ((), ("ablations=[table7c]",)):
        before, after = tiny(*overrides), tiny(*overrides, "seeds=[0]")
        assert {k: e.ids for k, e in plan(before).items()} == {k: e.ids for k, e in plan(after).items()}
        assert score_requests(before) == score_requests(after)
    assert experiment_set_id(tiny()) == experiment_set_id(load_params(TINY))  # unset keys stay out of the set id
    assert "seeds" not in tiny().model_dump() and "sweep" not in tiny().model_dump()


def test_sweep_and_seeds_compose():
    experiments = plan(tiny("sweep={hvc.alpha: [0.1, 2.0]}", "seeds=[0, 1]"))
    assert sorted(k for k, e in experiments.items() if e.trained) == sorted(
        ["hvc", "hvc@seed=1", "hvc.alpha=0.1", "hvc.alpha=0.1@seed=1", "hvc.alpha=2.0", "hvc.alpha=2.0@seed=1"]
    )


# --------------------------------------------------------------------------- tables


def test_mean_and_sample_std_over_seeds():
    m = MeanStd.of([0.53, 0.54, 0.55])
    assert float(m) == pytest.approx(0.54) and m.std == pytest.approx(0.01) and m.n == 3
    assert m.scaled(100).text(".1f") == "54.0 ± 1.0" and (m / 2).std == pytest.approx(0.005)
    assert MeanStd.of([0.5]).text(".1f") == "0.5"  # one run: no ±
    scores = {("a", "demo"): {"JF_mean": 0.5, "device": "cpu"}, ("a@seed=1", "demo"): {"JF_mean": 0.7, "device": "cpu"}}
    folded = aggregate_seeds(scores, {"a": ["a", "a@seed=1"]})
    assert list(folded) == [("a", "demo")] and folded[("a", "demo")]["device"] == "cpu"
    assert float(folded[("a", "demo")]["JF_mean"]) == pytest.approx(0.6)


def test_tables_show_mean_plus_minus_std_and_the_csv_keeps_numbers(tmp_path):
    p = tiny("seeds=[0, 1, 2]")
    jf = {"hvc": 0.53, "hvc@seed=1": 0.54, "hvc@seed=2": 0.55, "random": 0.2}
    scores = fake_scores(p, lambda i, key: jf[key])
    t = build_table("demo", p, seed_scores(p, scores))
    md = to_markdown(t)
    assert "54.0 ± 1.0" in md
    random_row = next(line for line in md.splitlines() if line.startswith("| Random"))
    assert "20.0" in random_row and "±" not in random_row  # a baseline: one run
    csv = pd.read_csv(io.StringIO(to_csv(t)))
    assert csv["Demo J&F (ours)"].tolist()[:2] == pytest.approx([54.0, 20.0])
    assert csv["Demo J&F (ours) std"].tolist()[0] == pytest.approx(1.0) and pd.isna(csv["Demo J&F (ours) std"][1])
    assert pd.api.types.is_numeric_dtype(csv["Demo J&F (ours)"])
    names = assemble(p, scores, tmp_path / "out")
    assert "mean ± sample standard deviation over seeds 0, 1, 2" in (tmp_path / "out" / "demo.md").read_text()
    assert "54.0 ± 1.0" in (tmp_path / "out" / "demo.md").read_text() and "sweep" not in names


def test_runs_csv_has_one_row_per_seed_and_aggregates_to_the_table(tmp_path):
    p = tiny("seeds=[0, 1, 2]")
    jf = {"hvc": 0.53, "hvc@seed=1": 0.54, "hvc@seed=2": 0.55, "random": 0.2}
    path = tmp_path / "runs.csv"
    runs_frame(p, fake_scores(p, lambda i, key: jf[key])).to_csv(path, index=False)
    runs = pd.read_csv(path)
    hvc = runs[runs.experiment == "hvc"]
    assert sorted(hvc["seed"]) == [0, 1, 2] and hvc["model_id"].nunique() == 3
    assert pd.api.types.is_numeric_dtype(runs["seed"]) and pd.api.types.is_numeric_dtype(runs["score"])
    agg = runs.groupby(["experiment", "benchmark"])["score"].agg(["mean", "std"]).loc[("hvc", "demo")]
    assert agg["mean"] == pytest.approx(0.54) and agg["std"] == pytest.approx(0.01)
    assert runs.columns.tolist()[:6] == ["experiment", "trained", "method", "benchmark", "headline", "score"]


def test_one_seed_keeps_the_tables_and_gives_runs_csv_a_seed_column(tmp_path):
    p = tiny()
    scores = fake_scores(p)
    assert seed_scores(p, scores) is scores
    assert "±" not in to_markdown(build_table("demo", p, scores)) and "std" not in to_csv(build_table("demo", p, scores))
    runs = runs_frame(p, scores)
    assert runs["seed"].tolist() == [0, 0] and list(runs.columns).count("seed") == 1


def test_the_sweep_table_has_a_row_per_value_with_scores_and_cost(tmp_path):
    p = tiny("sweep={hvc.alpha: [0.1, 0.5, 2.0]}", "seeds=[0, 1]")
    jf = {"hvc.alpha=0.1": 0.30, "hvc.alpha=0.1@seed=1": 0.32, "hvc.alpha=0.5": 0.50, "hvc.alpha=0.5@seed=1": 0.50}
    scores = fake_scores(p, lambda i, key: jf.get(key, 0.7))
    del scores[("hvc.alpha=2.0@seed=1", "demo")], scores[("hvc.alpha=2.0", "demo")]  # not scored yet
    names = assemble(p, scores, tmp_path / "out")
    assert names[-1] == "sweep"
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "Sweep over hvc.alpha (3 settings)" in md and "31.0 ± 1.4" in md and "50.0 ± 0.0" in md
    assert "Empty (Demo: hvc.alpha=2.0)" in md
    table = pd.read_csv(tmp_path / "out" / "sweep.csv")
    assert table["hvc.alpha"].tolist() == [0.1, 0.5, 2.0]
    assert table["Demo J&F"].tolist()[:2] == pytest.approx([31.0, 50.0]) and pd.isna(table["Demo J&F"][2])
    for column in ("Demo J mean", "Demo F mean", "iterations", "training time (s)", "images/s", "peak memory (GB)"):
        assert pd.api.types.is_numeric_dtype(table[column]), column
    assert table["iterations"].tolist() == [2, 2, 2]


def test_the_sweep_table_names_the_grid():
    p = tiny("sweep={hvc.alpha: [0.1, 2.0], hvc.augment: [crop, affine]}")
    t = build_sweep_table(p, fake_scores(p))
    assert t["title"] == "Sweep over hvc.alpha × hvc.augment (4 settings)"
    assert [r[0] for r in t["rows"]][:2] == ["hvc.alpha=0.1, hvc.augment=crop", "hvc.alpha=0.1, hvc.augment=affine"]
    assert t["formats"][1:3] == ["g", ""]  # a number column and a text column


# --------------------------------------------------------------------------- workflow


def dry_run(ws, sweep: str) -> tuple[list[str], str]:
    """``snakemake -n`` of all_tables in the tiny setting with ``--config sweep``: the command and its log."""
    cmd = ["snakemake", "-n", "-p", "all_tables", "--cores", "2", "--configfile", "tests/configs/tiny.yaml", "--config", sweep]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return cmd, log


def test_snakemake_plans_one_training_per_swept_value_and_one_table(tmp_path):
    ws = copy_workflow(tmp_path / "ws")
    cmd, log = dry_run(ws, "sweep={hvc.alpha: [0.1, 0.5, 2.0]}")
    counts = job_counts(log)
    assert counts["train"] == 4 and counts["tables"] == 1  # the base model (the demo table) and three sweep values
    assert counts["propagate"] == counts["evaluate"] == 5  # four models and the random baseline
    for alpha in ("0.1", "0.5", "2.0"):
        assert f"--set hvc.alpha={alpha} --expect-id" in log
    bad = subprocess.run([*cmd[:-1], "sweep={hvc.alpah: [0.1]}"], cwd=ws, capture_output=True, text=True)
    assert bad.returncode != 0 and "sweep: hvc.alpah: unknown key" in bad.stdout + bad.stderr


def test_snakemake_propagates_a_swept_propagation_key_with_one_model(tmp_path):
    """Two sweep values of a propagation key: no training beyond the base model, and each
    propagation job gets its own value (the job's --expect-id would stop it otherwise)."""
    ws = copy_workflow(tmp_path / "ws")
    _, log = dry_run(ws, "sweep={propagation.topk: [3, 7]}")
    counts = job_counts(log)
    assert counts["train"] == 1 and counts["propagate"] == 4  # base, random, topk 3, topk 7
    p = tiny("sweep={propagation.topk: [3, 7]}")
    for point, exp in sweep_experiments(p):
        assert f"--set propagation.topk={point['propagation.topk']} --encoder" in log
        assert f"--expect-id {exp.ids['propagate']}" in log


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_sweep_with_seeds_trains_and_tabulates_the_tiny_demo(tmp_path):
    """The real chain on the tiny setting: one sweep value and two seeds train four models
    (the base and alpha 0.5, seeds 0 and 1); the sweep table shows mean ± std, runs.csv one
    row per run, and a second run does nothing."""
    ws = copy_workflow(tmp_path / "ws")
    cmd = ["snakemake", "all_tables", "--cores", "2", "--configfile", "tests/configs/tiny.yaml",
           "--config", "sweep={hvc.alpha: [0.5]}", "seeds=[0, 1]"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert job_counts(log)["train"] == 4
    tables = ws / "results" / "tables" / "latest"
    sweep = (tables / "sweep.md").read_text()
    row = next(line for line in sweep.splitlines() if line.startswith("| hvc.alpha=0.5"))
    assert row.count("±") >= 4, row  # J&F, J, F and the training cost, each over two seeds
    runs = pd.read_csv(ws / "results" / "runs.csv")
    trained = runs[runs.trained]
    assert sorted(zip(trained["experiment"], trained["seed"])) == [("hvc", 0), ("hvc", 1), ("hvc.alpha=0.5", 0), ("hvc.alpha=0.5", 1)]
    assert trained["model_id"].nunique() == 4
    mean = trained[trained.experiment == "hvc.alpha=0.5"]["score"].mean()
    assert pd.read_csv(tables / "sweep.csv")["Demo J&F"][0] == pytest.approx(100 * mean)
    again = subprocess.run([*cmd, "-n"], cwd=ws, capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
