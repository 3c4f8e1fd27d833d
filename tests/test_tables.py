"""The paper's tables: every cell ours, published, or a reason; the experiment grid behind them."""

import csv
import io
import re
import json
from pathlib import Path

import pytest
from PIL import Image

from hvc.config.plan import plan, published_tables, table_columns, table_names
from hvc.report.figures import bar_chart
from hvc.config.params import load_params, parse_overrides
from hvc.config.ids import stage_ids
from hvc.report.tables import METRICS, assemble, build_table, to_csv, to_markdown

ROOT = Path(__file__).resolve().parents[1]
ALL = "davis2017,davis2016,davis2017_testdev,ytvos2018,ytvos2019,vost,vip,jhmdb"


def params(*overrides):
    return load_params([ROOT / "params.yaml", ROOT / "configs" / "paper.yaml"], parse_overrides(list(overrides)))


def fake_scores(p, value=0.5):
    """A score for every (experiment, source) the tables of ``p`` name."""
    scores = {}
    for key in plan(p):
        for name in table_names(p):
            for src, metric in table_columns(published_tables()[name]):
                scores.setdefault((key, src), {})[metric] = value
    return scores


def test_every_table_has_one_published_value_per_column_and_known_metrics():
    for name, t in published_tables().items():
        cols = table_columns(t)
        assert all(m in METRICS for _, m in cols), name
        for row in t["rows"]:
            assert len(row.get("published") or []) in (0, len(cols)), (name, row["label"])


def test_cells_are_ours_published_or_say_why(tmp_path):
    p = params(f"data.benchmarks=[{ALL}]", "ablations=[table6,table7c]", "baselines=[random,imagenet]")
    names = table_names(p)
    assert {"table1", "table2", "table3", "table4", "table5", "table8", "table9", "table10", "table11", "table6", "table7c"} <= set(names)
    scores = fake_scores(p)
    for name in names:
        t = build_table(name, p, scores)
        for row in t["rows"]:
            assert isinstance(row[0], str) and not re.search(r"[a-z_]+\.[a-z_]+", row[0]), row[0]  # a label, never a key name
            for cell in row[1:]:
                assert cell is None or isinstance(cell, (int, float)), (name, row, cell)  # a number, or empty with a note
    t1 = build_table("table1", p, scores)
    hvc = t1["rows"][0]
    assert hvc[:3] == ["HVC", 50.0, 73.1]  # ours (fraction → percent) beside the paper's
    semantic = next(r for r in t1["rows"] if r[0].startswith("MoCo"))
    assert semantic[1] is None  # the reason is a note, said once
    assert sum("needs propagation.semantic_checkpoint" in n for n in t1["notes"]) == 1


def test_server_benchmarks_say_what_to_upload(tmp_path):
    p = params("data.benchmarks=[ytvos2018]")
    status = "needs server score: upload results/submissions/ytvos2018/x.zip to the server, save ..."
    t = build_table("table2", p, {("hvc", "ytvos2018"): {"status": status}})
    assert t["rows"][0][1] is None and t["notes"].count(status) == 1
    assert sum("needs the server's score" in n for n in t["notes"]) == 1, t["notes"]
    t = build_table("table2", p, {("hvc", "ytvos2018"): {"overall": 0.719, "J_seen": 0.70, "F_seen": 0.72, "J_unseen": 0.67, "F_unseen": 0.77}})
    assert t["rows"][0][1:3] == [71.9, 71.9]


def test_training_cost_table_reads_train_json():
    p = params()
    t = build_table("table8", p, {("hvc", "train"): {"steps": 18460, "train_seconds": 5400, "peak_gpu_memory_gb": 9.25, "device": "H100"}})
    assert t["rows"][0][0] == "HVC (trained on coco)"  # the training set's name, not the key's
    assert t["rows"][0][1:] == [18460.0, 50000, 1.5, 2, 9.25, 16]
    shown = [c.strip() for c in to_markdown(t).splitlines()[4].split("|")[1:-1]]
    assert shown[1:] == ["18,460", "50,000", "1.50", "2", "9.25", "16"]  # as the paper prints them
    assert to_csv(t).splitlines()[1] == "HVC (trained on coco),18460,50000,1.5,2.0,9.25,16.0"  # numbers
    t = build_table("table8", p, {("hvc", "train"): {"steps": 96, "train_seconds": 384, "peak_gpu_memory_gb": None, "device": "cpu"}})
    assert t["rows"][0][5] is None and any("not measured: trained on cpu" in n for n in t["notes"])
    host = {"steps": 96, "train_seconds": 384, "peak_gpu_memory_gb": None, "peak_host_memory_gb": 1.24, "device": "cpu"}
    t = build_table("table8", p, {("hvc", "train"): host})
    assert t["rows"][0][5] == 1.24 and any("peak host memory" in n and "(cpu)" in n for n in t["notes"])
    rows = list(csv.reader(io.StringIO(to_csv(t))))
    assert rows[1][1:] == ["96", "50000", "0.10666666666666667", "2.0", "1.24", "16.0"]


def test_semantic_checkpoint_adds_merged_and_alone_rows_without_retraining():
    base = params("data.benchmarks=[davis2017]")
    with_moco = params("data.benchmarks=[davis2017]", "propagation.semantic_checkpoint=moco.pth.tar")
    assert stage_ids(base) == stage_ids(with_moco)  # same model and same plain-HVC predictions
    exps = plan(with_moco)
    assert exps["hvc+semantic"].ids["train"] == exps["hvc"].ids["train"]
    assert exps["hvc+semantic"].encoder.startswith(exps["hvc"].encoder + "+semantic-")
    assert exps["semantic"].encoder.startswith("semantic-") and not exps["semantic"].trained
    other = params("data.benchmarks=[davis2017]", "propagation.semantic_checkpoint=other.pth.tar")
    assert plan(other)["semantic"].encoder != exps["semantic"].encoder
    rows = {r[0]: r for r in build_table("table1", with_moco, fake_scores(with_moco))["rows"]}
    assert rows["HVC + MoCo merge (official code)"][1] == 50.0 and rows["MoCo (semantic encoder alone)"][1] == 50.0


def test_assemble_writes_every_format_and_bar_charts(tmp_path):
    p = params("data.benchmarks=[davis2017,davis2016]", "ablations=[table7c]")
    names = assemble(p, fake_scores(p, 0.6), tmp_path / "tables")
    for name in names:
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "tables" / f"{name}.{ext}").stat().st_size > 0
    with open(tmp_path / "tables" / "table7c.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["Setting", "DAVIS17 J&F (ours)", "DAVIS17 J&F (paper)"] and rows[1][1:3] == ["60.0", "71.9"]
    import pandas as pd

    for name in names:  # pandas reads every value column of every CSV as numbers
        df = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
        assert all(str(df[c].dtype).startswith(("float", "int")) for c in df.columns[1:]), (name, df.dtypes)
    built = json.loads((tmp_path / "tables" / "tables.json").read_text())
    assert bar_chart(built["table7c"], tmp_path / "bars.png")
    assert Image.open(tmp_path / "bars.png").size[0] > 300
    empty = build_table("table7c", p, {})
    assert not bar_chart(empty, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("bench", ["vip", "jhmdb"])
def test_table5_needs_only_one_of_its_benchmarks(bench):
    assert "table5" in table_names(params(f"data.benchmarks=[{bench}]"))


def test_only_the_cells_the_tables_show_are_computed():
    from hvc.config.plan import score_requests

    p = params("data.benchmarks=[davis2017,vip]", "ablations=[table7c]")
    requests = set(score_requests(p))
    assert ("hvc.alpha=0.1", "davis2017") in requests  # an ablation row, on its table's benchmark
    assert ("hvc.alpha=0.1", "vip") not in requests  # not on VIP: no table shows that cell
    assert {("hvc", "vip"), ("random", "vip"), ("hvc", "train")} <= requests
    assert not any(key.startswith("data.train_set=ytvos") for key, _ in requests)  # HVC-YT: table7e not listed
    with_yt = set(score_requests(params("data.benchmarks=[davis2017,vip]", "ablations=[table7e]")))
    assert {("data.train_set=ytvos", "vip"), ("data.train_set=ytvos", "train")} <= with_yt  # trained anyway: shown
