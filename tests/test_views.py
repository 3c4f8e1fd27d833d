"""What a user reads: `hvc params -p`, `hvc plan`, table notes, labelled overlays, the DAVIS
toolkit's CSVs, and the thread count the commands are given."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hvc.cli import _set_threads, app
from hvc.io import write_mask
from hvc.eval.metrics import DAVIS_GLOBAL_COLUMNS, DAVIS_SEQUENCE_COLUMNS, davis_toolkit_csvs, evaluate_folder
from hvc.config.params import load_params, parse_overrides
from hvc.report.tables import build_table, to_html

ROOT = Path(__file__).resolve().parents[1]


def invoke(caplog, *args):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        r = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    return r, errors


def test_params_shows_effective_values_their_origin_and_choices(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "crw.yaml").write_text("propagation:\n  preset: crw\n  topk: 5\n")
    r, _ = invoke(caplog, "params", "-p", "params.yaml", "-p", "crw.yaml")
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "propagation.topk" in ln)
    assert " 5 " in line and "wins over preset crw: 10" in line
    assert "one of crop, affine, color, blur" in r.output and "[demo]" in r.output
    r, _ = invoke(caplog, "params")  # the schema: defaults and choices
    assert "one of official, crw, none" in r.output and "['demo']" in r.output


def test_params_schema_writes_the_json_schema(tmp_path, caplog):
    from hvc.config.params import params_json_schema_text

    r, _ = invoke(caplog, "params", "--schema", tmp_path / "s.json")
    assert r.exit_code == 0 and (tmp_path / "s.json").read_text() == params_json_schema_text()


def test_plan_prints_a_table_and_one_line_errors(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(ROOT)
    abl = tmp_path / "abl.yaml"
    abl.write_text("ablations: [table7c]\n")
    r, errors = invoke(caplog, "plan", "-p", "params.yaml", "-p", abl)
    assert r.exit_code == 0 and not errors, r.output
    rows = [ln for ln in r.output.splitlines() if ln.startswith("│")]
    assert any("hvc" in ln and "trained HVC" in ln and "base params" in ln for ln in rows)
    assert any("hvc.alpha=0.1" in ln and "table7c" in ln for ln in rows)
    assert any("random" in ln and "baseline" in ln for ln in rows)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: many\n")
    r, errors = invoke(caplog, "plan", "-p", "params.yaml", "-p", bad)
    assert r.exit_code == 2 and r.exception is not None and isinstance(r.exception, SystemExit)  # no traceback
    assert len(errors) == 1 and "train.batch_size = 'many'" in errors[0] and str(bad) in errors[0]


def test_threads_option_sets_torchs_thread_count(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # restored after the test
    monkeypatch.delenv("OMP_WAIT_POLICY")
    try:
        _set_threads(1)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # idle threads sleep: shared CPUs
        _set_threads(2)
        assert torch.get_num_threads() == 2
        _set_threads(None)  # left as it is
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for command in ("train", "propagate", "evaluate", "flow", "figures"):
        assert "--threads" in CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output, command


def test_a_row_not_run_says_so_once_in_a_note():
    p = load_params([ROOT / "params.yaml", ROOT / "configs" / "paper.yaml"], parse_overrides(["data.benchmarks=[davis2017]"]))
    t = build_table("table1", p, {("hvc", "davis2017"): {"JF_mean": 0.5, "J_mean": 0.5, "J_recall": 0.5, "F_mean": 0.5, "F_recall": 0.5}})
    rows = {r[0]: r for r in t["rows"]}
    moco = rows["MoCo (semantic encoder alone)"]
    assert set(moco[1:]) == {None}  # no reason repeated in every cell
    assert not any(isinstance(c, str) for r in t["rows"] for c in r[1:])
    notes = [n for n in t["notes"] if "semantic_checkpoint" in n]
    assert len(notes) == 1 and "MoCo (semantic encoder alone)" in notes[0] and "HVC + MoCo merge" in notes[0]
    html = to_html(t)
    assert html.count("<tr") == len(t["rows"]) + 1 and "semantic_checkpoint" in html and "&amp;" in html  # "J&F" escaped


def test_a_column_not_run_for_every_row_is_named_once():
    p = load_params([ROOT / "params.yaml", ROOT / "configs" / "paper.yaml"], parse_overrides(["data.benchmarks=[vip]"]))
    t = build_table("table5", p, {})
    notes = [n for n in t["notes"] if "jhmdb not in data.benchmarks" in n]
    assert len(notes) == 1 and notes[0].startswith("Not run (JHMDB PCK@0.1, JHMDB PCK@0.2)"), t["notes"]
    jhmdb = [c for c, h in enumerate(t["header"]) if h.startswith("JHMDB") and h.endswith("(ours)")]
    assert jhmdb and all(r[c] is None for r in t["rows"] for c in jhmdb)


def _tiny_davis(root: Path) -> list[str]:
    for seq, shift in (("a", 0), ("b", 2)):
        for t in range(4):
            gt = np.zeros((20, 30), np.uint8)
            gt[4:12, 4 + t : 14 + t] = 1
            gt[14:18, 20:26] = 2
            pred = np.roll(gt, shift, axis=1)
            write_mask(root / "gt" / seq / f"{t:05d}.png", gt)
            write_mask(root / "pred" / seq / f"{t:05d}.png", pred)
    return ["a", "b"]


def test_davis_toolkit_csvs_have_the_toolkits_columns(tmp_path):
    seqs = _tiny_davis(tmp_path)
    one = evaluate_folder(tmp_path / "gt", tmp_path / "pred", seqs)
    two = evaluate_folder(tmp_path / "gt", tmp_path / "pred", seqs, workers=2)
    assert one == two  # threads change nothing but the speed
    per_object = one.pop("per_object")
    global_csv, sequence_csv = davis_toolkit_csvs(one, per_object)
    g = list(csv.reader(io.StringIO(global_csv)))
    assert g[0] == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"] == list(DAVIS_GLOBAL_COLUMNS)
    assert len(g) == 2 and float(g[1][0]) == pytest.approx(one["JF_mean"], abs=5e-4) and len(g[1][1].split(".")[1]) == 3
    s = list(csv.reader(io.StringIO(sequence_csv)))
    assert s[0] == ["Sequence", "J-Mean", "F-Mean"] == list(DAVIS_SEQUENCE_COLUMNS)
    assert [r[0] for r in s[1:]] == ["a_1", "a_2", "b_1", "b_2"]
    assert float(s[1][1]) == pytest.approx(1.0) and float(s[3][1]) < 1.0  # a is exact, b shifted


def test_evaluate_writes_the_toolkit_csvs_next_to_the_scores(tmp_path, caplog):
    from hvc.data.demo import build_demo
    from hvc.config.params import DemoParams

    demo = tmp_path / "demo"
    build_demo(DemoParams(num_sequences=2, num_frames=4, height=48, width=64, max_objects=2, train_size=64, train_copies=1), demo)
    bench = demo / "benchmark"
    r, errors = invoke(
        caplog, "evaluate", "-p", ROOT / "params.yaml", "--benchmark", "demo", "--data", bench,
        "--predictions", bench / "Annotations" / "480p", "--out", tmp_path / "s" / "demo.json",
        "--toolkit-csv", tmp_path / "s" / "demo", "--threads", "2",
    )  # fmt: skip
    assert r.exit_code == 0, (r.output, errors)
    rows = list(csv.reader(open(tmp_path / "s" / "demo" / "global_results-val.csv")))
    assert rows[0][0] == "J&F-Mean" and rows[1][0] == "1.000"  # ground truth scored against itself
    assert (tmp_path / "s" / "demo" / "per-sequence_results-val.csv").read_text().startswith("Sequence,J-Mean,F-Mean\n")


def test_overlay_grid_is_labelled(tmp_path):
    from hvc.data.demo import build_demo
    from hvc.report.figures import overlay_grid
    from hvc.config.params import DemoParams

    demo = tmp_path / "demo"
    build_demo(DemoParams(num_sequences=2, num_frames=5, height=48, width=64, max_objects=1, train_size=64, train_copies=1), demo)
    bench = demo / "benchmark"
    overlay_grid("demo", bench, bench / "Annotations" / "480p", tmp_path / "g.png", columns=3, width=120, encoder="hvc")
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    tile_h = round(48 * 120 / 64)
    assert grid.shape == (22 + 2 * tile_h, 3 * 120, 3)  # a title strip above 2 rows of 3 tiles
    title = grid[:22]
    assert (title == 0).all(axis=2).sum() > 200 and (title == 255).all(axis=2).sum() > 200  # text drawn on it
    corner = grid[22 + tile_h - 16 : 22 + tile_h, :60]  # the frame number box of the first tile
    assert (corner == 0).all(axis=2).mean() > 0.3
