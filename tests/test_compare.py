"""The equal-budget comparison and the LIIR rows: plan, tables, and the Snakemake workflow
end to end on the tiny demo (HVC and LIIR trained on the same data for the same budget)."""

from __future__ import annotations

import csv
import json
import re
import os
import subprocess
from pathlib import Path

import pytest

from hvc.config.params import load_params, propagation_for
from hvc.config.registry import method_spec
from hvc.config.plan import budget_benchmark, budget_experiments, plan, score_requests, table_names
from hvc.report.tables import build_budget_table, build_table, runs_frame, to_csv, to_markdown

ROOT = Path(__file__).resolve().parents[1]
TINY = [ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]
COMPARE = ROOT / "tests" / "configs" / "tiny_compare.yaml"


def test_default_demo_trains_hvc_only():
    p = load_params(TINY)
    assert not budget_experiments(p) and "budget" not in table_names(p)
    assert {e.params.method for e in plan(p).values()} == {"hvc"}


def test_compare_plans_liir_rows_and_the_budget_experiments():
    p = load_params([*TINY, COMPARE])
    exps = plan(p)
    assert {"budget-hvc", "budget-liir"} <= set(exps)
    liir = exps["budget-liir"]
    assert liir.params.method == "liir" and liir.encoder_method == "liir"
    assert propagation_for(liir.params, "liir").radius == 14  # LIIR's preset fills what the files leave out
    assert liir.params.train.max_steps == exps["budget-hvc"].params.train.max_steps == 2  # 8 samples / batch 4
    assert liir.ids["demo_data"] == exps["hvc"].ids["demo_data"]  # one demo, with training videos, for every method
    assert table_names(p)[-1] == "budget" and budget_benchmark(p) == "demo"
    assert ("budget-liir", "demo") in score_requests(p) and ("budget-liir", "train") in score_requests(p)
    # the LIIR row of Table 8 is trained (with its own key) beside HVC
    keys = {k for k, src in score_requests(p) if src == "train"}
    assert "method=liir" in keys
    # a wall-clock budget instead
    timed = load_params([*TINY, COMPARE], {"budget": {"unit": "seconds", "seconds": 30}})
    assert {e.params.train.max_seconds for e in budget_experiments(timed).values() if e.trained} == {30}


def test_liir_rows_train_on_youtube_vos_when_the_training_set_has_no_videos():
    p = load_params([*TINY, COMPARE], {"data": {"train_set": "coco", "benchmarks": ["davis2017"]}})
    exps = plan(p)
    liir = next(e for e in exps.values() if e.trained and e.params.method == "liir" and not e.key.startswith("budget"))
    assert liir.params.data.train_set == "ytvos"
    assert exps["budget-hvc"].params.data.train_set == exps["budget-liir"].params.data.train_set == "ytvos"
    t1 = build_table("table1", p, {})
    row = next(r for r in t1["rows"] if r[0] == "LIIR (trained here)")
    assert row[2] == 72.1 and row[1] is None  # published beside ours
    assert any(n.startswith("Empty (") and "no score file" in n for n in t1["notes"]), t1["notes"]
    t1_off = build_table("table1", load_params(TINY, {"data": {"benchmarks": ["davis2017"]}}), {})
    assert any("list liir in compare" in n for n in t1_off["notes"])


BUDGET_KEYS = ["budget-hvc", "budget-hvc-random", "budget-liir", "budget-liir-generic", "budget-liir-random", "budget-liir-random-generic"]


def test_budget_rows_are_trained_and_random_through_both_inferences():
    """Every compared method trained and at random init; LIIR (own inference) also through the
    generic propagation. Rows of one model share its id (nothing re-trains), only the
    propagation id differs; a random initialisation trains nothing."""
    p = load_params([*TINY, COMPARE])
    exps = budget_experiments(p)
    assert list(exps) == BUDGET_KEYS
    liir, generic, rand, rand_generic = (exps[k] for k in BUDGET_KEYS[2:])
    assert generic.trained and generic.ids["train"] == liir.ids["train"] and generic.encoder == liir.encoder
    assert generic.ids["propagate"] != liir.ids["propagate"] and generic.params.propagation.inference == "generic"
    assert generic.ids["evaluate"] == liir.ids["evaluate"]
    assert not rand.trained and rand.random_init and rand.encoder == "random" and rand.encoder_method == "liir"
    assert rand.ids["propagate"] == liir.ids["propagate"] and rand_generic.ids["propagate"] == generic.ids["propagate"]
    assert rand.params.seed == liir.params.seed and "train" not in str(rand.set_args)
    assert rand.display == "LIIR random init"
    # HVC has no inference of its own: one trained row, one random row (the plain random baseline's propagation)
    assert exps["budget-hvc-random"].ids["propagate"] == exps["budget-hvc"].ids["propagate"]
    requests = set(score_requests(p))
    assert {(k, "demo") for k in BUDGET_KEYS} <= requests
    assert ("budget-liir-generic", "train") in requests and not any((k, "train") in requests for k in BUDGET_KEYS if "random" in k)
    # one trained model per method: the generic row adds none
    trained = [e for e in plan(p).values() if e.trained]
    assert {e.ids["train"] for e in trained} == {e.ids["train"] for e in trained if not e.key.endswith("-generic")}
    # a run that already propagates generically gets no second path
    flat = budget_experiments(load_params([*TINY, COMPARE], {"propagation": {"inference": "generic"}}))
    assert list(flat) == ["budget-hvc", "budget-hvc-random", "budget-liir", "budget-liir-random"]


def test_budget_table_reads_scores_and_training_logs():
    p = load_params([*TINY, COMPARE])
    liir_train = {"train_seconds": 20.0, "images_per_s": 0.4, "steps": 2, "global_batch": 4, "peak_gpu_memory_gb": 3.0, "device": "NVIDIA H200"}
    scores = {
        ("budget-hvc", "demo"): {"JF_mean": 0.5, "scored_frames": 10, "foreground_frames": 10},
        ("budget-hvc", "train"): {"train_seconds": 10.0, "images_per_s": 0.8, "steps": 2, "global_batch": 4,
                                  "peak_gpu_memory_gb": None, "peak_host_memory_gb": 1.5, "device": "cpu"},
        ("budget-hvc-random", "demo"): {"JF_mean": 0.0, "scored_frames": 10, "foreground_frames": 0},
        ("budget-liir", "train"): liir_train,
        ("budget-liir-generic", "train"): liir_train,
        ("budget-liir-generic", "demo"): {"JF_mean": 0.25},  # a score file without the foreground count
        ("budget-liir-random", "demo"): {"JF_mean": 0.125, "scored_frames": 10, "foreground_frames": 3},
    }  # fmt: skip
    t = build_budget_table(p, scores)
    assert t["header"][:5] == ["Method", "initialisation", "inference", "J&F", "prediction"]
    rows = t["rows"]
    assert rows[0] == ["HVC", "trained", "generic", 50.0, None, 10.0, 0.8, 1.5, "host", 2, 8, None, "cpu"]
    assert rows[1] == ["HVC", "random (seed 0)", "generic", None, "degenerate: no foreground predicted", *[None] * 8]
    assert rows[2][:9] == ["LIIR", "trained", "own", None, None, 20.0, 0.4, 3.0, "GPU"]  # not scored yet
    assert rows[3][:6] == ["LIIR", "trained", "generic", 25.0, None, 20.0]  # the same model's training cost
    assert rows[4][:6] == ["LIIR", "random (seed 0)", "own", 12.5, None, None]
    assert rows[5][:5] == ["LIIR", "random (seed 0)", "generic", None, None]
    assert any(n.startswith("degenerate: no foreground predicted (HVC random init)") for n in t["notes"]), t["notes"]
    assert any(n.startswith("No J&F (LIIR, LIIR random init (generic))") for n in t["notes"]), t["notes"]
    csv_lines = to_csv(t).splitlines()
    assert csv_lines[1] == "HVC,trained,generic,50.0,,10.0,0.8,1.5,host,2,8,,cpu"
    assert csv_lines[2].startswith("HVC,random (seed 0),generic,,degenerate: no foreground predicted,")  # never 0.0
    assert "| degenerate: no foreground predicted |" in to_markdown(t)
    assert [q["key"] for q in t["points"]] == BUDGET_KEYS
    assert [q["label"] for q in t["points"]][2:4] == ["LIIR", "LIIR (generic)"]


def test_runs_csv_marks_a_degenerate_row_and_names_the_method_of_a_random_row():
    p = load_params([*TINY, COMPARE])
    scores = {
        ("budget-liir-random", "demo"): {"JF_mean": 0.0, "J_mean": 0.0, "F_mean": 0.0, "scored_frames": 10, "foreground_frames": 0},
        ("budget-liir-generic", "demo"): {"JF_mean": 0.25, "J_mean": 0.2, "F_mean": 0.3, "scored_frames": 10, "foreground_frames": 4},
        ("budget-liir-generic", "train"): {"train_seconds": 20.0, "steps": 2},
    }
    runs = runs_frame(p, scores).set_index("experiment")
    rand, generic = runs.loc["budget-liir-random"], runs.loc["budget-liir-generic"]
    assert rand["method"] == "liir" and not rand["trained"] and bool(rand["degenerate"]) and rand["score"] != rand["score"]  # NaN, not 0.0
    assert generic["score"] == 0.25 and not bool(generic["degenerate"]) and generic["train_seconds"] == 20.0
    assert rand["propagation.inference"] == "method" and generic["propagation.inference"] == "generic"


@pytest.mark.slow
@pytest.mark.timeout(1500)  # more propagations: each method at random init too, LIIR through both inferences
def test_snakemake_runs_the_comparison_on_the_tiny_demo(workflow_workspace):
    ws = workflow_workspace("tiny.yaml", "tiny_compare.yaml")
    cmd = "snakemake all_tables --cores 2 --configfile tests/configs/tiny.yaml tests/configs/tiny_compare.yaml"
    proc = subprocess.run(cmd, cwd=ws, shell=True, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    tables = ws / "results" / "tables" / "latest"
    assert all((tables / f"budget.{ext}").is_file() for ext in ("md", "csv", "tex", "html"))
    rows = list(csv.reader((tables / "budget.csv").open()))
    assert [r[:3] for r in rows[1:]] == [
        ["HVC", "trained", "generic"], ["HVC", "random (seed 0)", "generic"],
        ["LIIR", "trained", "own"], ["LIIR", "trained", "generic"], ["LIIR", "random (seed 0)", "own"], ["LIIR", "random (seed 0)", "generic"],
    ]  # fmt: skip
    for r in rows[1:]:
        assert (r[3] != "") != (r[4] == "degenerate: no foreground predicted")  # a J&F, or why there is none
        if r[1] == "trained":
            assert float(r[5]) > 0 and r[9] == "2" and r[10] == "8"  # timed, equal budget
        else:
            assert r[5:11] == [""] * 6  # nothing trained
    assert rows[3][11] == rows[4][11] == "phase1 1, phase2 1"  # LIIR ran both of its phases in the budget; one model for both paths
    t8 = (tables / "table8.md").read_text()
    assert re.search(r"\| LIIR \(trained here\) +\| +2 \| +2,000,000 \|", t8), t8
    assert (ws / "results" / "figures" / "latest" / "budget.png").is_file()
    specs = [json.loads(f.read_text()) for f in (ws / "artifacts" / "models").glob("*/encoder.json")]
    assert sorted(s["method"] for s in specs) == ["hvc", "liir"]


def test_the_demo_comparison_has_a_batch_of_training_videos():
    """configs/compare.yaml on the demo: every clip method's shards (one sample per demo
    training video) hold at least one training batch, so its train stage can start."""
    p = load_params([ROOT / "params.yaml", ROOT / "configs" / "compare.yaml"])
    clip_experiments = [e for e in plan(p).values() if e.trained and method_spec(e.params.method).reads_clips]
    assert {e.params.method for e in clip_experiments} == {"liir", "stt", "maskvos"}, "compare.yaml plans no training of a clip method"
    for e in clip_experiments:
        assert e.params.data.train_set == "demo"
        assert e.params.demo.train_videos >= e.params.train.batch_size, e.key


def test_with_another_trained_method_every_row_names_it():
    """`method: liir`: the trained rows say LIIR (not HVC), carry no HVC published numbers,
    Table 8 lists LIIR once, and the plan labels its experiments LIIR."""
    p = load_params(TINY, {"method": "liir", "data": {"benchmarks": ["demo", "davis2017"]}})
    demo = build_table("demo", p, {})
    assert [r[0] for r in demo["rows"]][:2] == ["LIIR (trained)", "Random init (untrained)"]
    t8 = build_table("table8", p, {})
    labels = [r[0] for r in t8["rows"]]
    assert labels.count("LIIR (trained on demo)") == 1 and "LIIR (trained here)" not in labels and not any("HVC" in x for x in labels)
    t1 = build_table("table1", p, {})
    row = next(r for r in t1["rows"] if r[0] == "LIIR")
    assert row[2] is None  # the published 73.1 is HVC's, not shown beside LIIR's score
    exps = plan(p)
    assert exps["liir"].display == "LIIR" and exps["random"].display == "LIIR random init"
    assert exps["random"].encoder_method == "liir" and exps["liir"].encoder_method == "liir"


def test_a_method_preset_reaches_its_own_encoders_only():
    """LIIR's window radius (its preset) for LIIR's encoders; the random and ImageNet
    baselines of an HVC run, and HVC's model, keep the generic settings."""
    p = load_params([*TINY, COMPARE], {"baselines": ["random", "imagenet"]})
    exps = plan(p)
    assert exps["imagenet"].encoder_method == "hvc" and exps["random"].encoder_method == "hvc"
    assert exps["budget-liir"].ids["propagate"] != exps["budget-hvc"].ids["propagate"]
    assert exps["imagenet"].ids["propagate"] == exps["hvc"].ids["propagate"]
    assert propagation_for(exps["hvc"].params, "hvc").radius == 12
