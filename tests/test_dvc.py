"""dvc.yaml generated from the experiment plan (`hvc dvc-yaml`): the checked-in file matches
params.yaml, every experiment of the paper's grid gets its stages, names and paths stay put
under `dvc exp run -S`, DVC's outputs stay apart from Snakemake's, and a stale file is
named with its stages. The runs through DVC itself are in test_pipeline.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dvc.schema import COMPILED_MULTI_STAGE_SCHEMA
from dvc.stage.utils import is_valid_name
from typer.testing import CliRunner

from hvc.cli import app
from hvc.config.dvc import PLAN_MESSAGE, PLAN_STAMP, dvc_stages, dvc_yaml_text, headline_metrics, slug
from hvc.config.params import ParamsError, load_params
from hvc.config.plan import plan, score_requests

ROOT = Path(__file__).resolve().parents[1]
ALL_ABLATIONS = "[table6, table7a, table7b, table7c, table7d, table7e, table7f]"
DVC_ROOTS = ("artifacts/dvc/", "metrics/", "results/dvc/")


def test_checked_in_dvc_yaml_is_the_generated_one(monkeypatch):
    monkeypatch.chdir(ROOT)
    expected = dvc_yaml_text(["params.yaml"], load_params("params.yaml"))
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == expected, "dvc.yaml is stale: run `hvc dvc-yaml`"


@pytest.fixture
def paper_grid(tmp_path, monkeypatch):
    """The paper's setting with every ablation table, both baselines, the authors' and the
    semantic checkpoints, and one benchmark of each kind of scoring."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "paper.yaml").write_text((ROOT / "configs/paper.yaml").read_text())
    (tmp_path / "grid.yaml").write_text(
        f"ablations: {ALL_ABLATIONS}\nbaselines: [random, imagenet]\nauthors_checkpoint: ckpt/hvc_coco.pth\n"
        "data:\n  benchmarks: [davis2017, davis2016, vost, vip, jhmdb, ytvos2018]\n"
        "  sources: {davis2017_trainval: /lab/DAVIS}\n"
        "propagation:\n  semantic_checkpoint: ckpt/moco.pth\n"
    )
    files = ["params.yaml", "paper.yaml", "grid.yaml"]
    return files, load_params(files)


def test_every_job_of_the_paper_grid_has_its_stage(paper_grid):
    files, p = paper_grid
    stages = dvc_stages(files, p)
    COMPILED_MULTI_STAGE_SCHEMA({"stages": stages})  # DVC's own schema of dvc.yaml
    assert all(is_valid_name(name) for name in stages)
    experiments = plan(p)
    assert {"hvc", "random", "imagenet", "authors", "semantic", "hvc+semantic", "hvc.alpha=0.1", "data.train_set=voc"} <= set(experiments)
    for key, exp in experiments.items():
        if exp.trained and not exp.merge_semantic:
            assert f"train-{slug(key)}" in stages, key
    for key, source in score_requests(p):
        name = slug(key)
        if source == "train":
            continue
        if source.startswith("flow_"):
            assert f"flow-{name}-{source[5:]}" in stages
            continue
        assert f"propagate-{name}-{source}" in stages and f"evaluate-{name}-{source}" in stages, (key, source)
    assert "submission-hvc-ytvos2018" in stages and "--server-scores" in stages["evaluate-hvc-ytvos2018"]["cmd"]
    fetched = {n.removeprefix("fetch-") for n in stages if n.startswith("fetch-")}
    assert fetched == {
        "davis2017_trainval", "davis2016", "vost", "vip", "jhmdb", "ytvos2018_val",
        "coco2017_train", "voc2012_trainval", "msra10k", "ytvos2018_train",
    }  # fmt: skip
    assert stages["fetch-davis2017_trainval"]["cmd"] == "hvc fetch davis2017_trainval --root data --from /lab/DAVIS"
    # one shards stage per training-set setting; the alpha rows share the base's shards
    assert "--shards artifacts/dvc/shards/hvc " in stages["train-hvc_alpha-0_1"]["cmd"]
    assert {n for n in stages if n.startswith("shards-")} == {
        "shards-hvc", "shards-data_train_set-ytvos", "shards-data_train_set-voc", "shards-data_train_set-msra10k",
        "shards-shards_step-5", "shards-shards_step-8", "shards-shards_step-10",
    }  # fmt: skip
    # authors' and semantic checkpoints are dependencies of the stages that read them
    assert "ckpt/hvc_coco.pth" in stages["propagate-authors-davis2017"]["deps"]
    assert "ckpt/moco.pth" in stages["propagate-hvc-with-semantic-davis2017"]["deps"]
    assert "--merge-semantic" in stages["propagate-hvc-with-semantic-davis2017"]["cmd"]
    assert "--encoder artifacts/dvc/models/hvc/encoder.pt" in stages["propagate-hvc-with-semantic-davis2017"]["cmd"]
    for name, st in stages.items():
        assert "--expect-id" not in st["cmd"], name  # ids change under `dvc exp run -S`, paths do not
        assert st["cmd"].startswith(("hvc ", "torchrun ")), name
        for out in st["outs"] + st.get("metrics", []):
            path = out if isinstance(out, str) else next(iter(out))
            assert path.startswith(DVC_ROOTS) or path.startswith("data/"), (name, path)


def test_stages_read_their_params_and_code(paper_grid):
    files, p = paper_grid
    stages = dvc_stages(files, p)
    ablation = stages["train-hvc_alpha-0_1"]
    assert "--set hvc.alpha=0.1" in ablation["cmd"] and ablation["cmd"].startswith("hvc train --params params.yaml --params paper.yaml --params grid.yaml")
    params = {f: keys for entry in ablation["params"] for f, keys in entry.items()}
    # the overridden key is left out, the other train keys of each file are listed
    assert not any(k in ("train", "hvc.alpha") for keys in params.values() for k in keys)
    assert {"hvc.radius", "train.epochs", "seed"} <= set(params["params.yaml"]) and "train.batch_size" in params["paper.yaml"]
    paper = {f: k for e in stages["train-hvc"]["params"] for f, k in e.items()}["paper.yaml"]
    assert "hvc" in paper and "train.batch_size" in paper and "train.log_every" not in paper  # logging is not read
    assert not any(k.startswith("liir") for k in paper + params["params.yaml"])  # another method's section
    assert "hvc/train.py" in ablation["deps"] and "hvc/methods/hvc/loss.py" in ablation["deps"]
    assert "hvc/eval/score.py" in stages["evaluate-hvc-davis2017"]["deps"]
    assert "hvc/report/tables.py" in stages["tables"]["deps"]
    # the evaluate stage writes the headline metric, uncached, for `dvc exp show`
    assert stages["evaluate-random-vip"]["metrics"] == [{"metrics/random/vip.json": {"cache": False}}]
    # ablation rows reach the tables under their keys
    assert "--score hvc.alpha=0.1:davis2017=artifacts/dvc/scores/hvc_alpha-0_1/davis2017.json" in stages["tables"]["cmd"].replace("'", "")


def test_names_and_paths_do_not_change_under_dvc_exp_run_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["ablations"] = ["table7c"]

    def text(hvc=None, **train):
        data = {**base, "train": {**base["train"], **train}, "hvc": {**base["hvc"], **(hvc or {})}}
        Path("params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return dvc_yaml_text(["params.yaml"], load_params("params.yaml"))

    assert text() == text(lr=0.002, hvc={"radius": 0.3})  # what `dvc exp run -S train.lr=0.002` changes
    base["baselines"] = ["random", "imagenet"]
    assert "propagate-imagenet-demo" in text()


def test_check_names_the_stale_stages(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text((ROOT / "params.yaml").read_text())
    runner = CliRunner()
    assert runner.invoke(app, ["dvc-yaml"]).exit_code == 0
    result = runner.invoke(app, ["dvc-yaml", "--check", "--stamp", "plan.txt"])
    assert result.exit_code == 0 and Path("plan.txt").read_text() == PLAN_MESSAGE
    Path("plan.txt").unlink()
    Path("params.yaml").write_text(Path("params.yaml").read_text().replace("baselines: [random]", "baselines: [random, imagenet]"))
    result = runner.invoke(app, ["dvc-yaml", "--check", "--stamp", "plan.txt"])
    assert result.exit_code == 1 and not Path("plan.txt").exists()
    message = [r.message for r in caplog.records if r.levelname == "ERROR"][-1]
    assert "dvc.yaml is stale" in message and "propagate-imagenet-demo" in message and "hvc dvc-yaml" in message
    assert "\n" not in message


def test_plan_stage_runs_the_check_before_every_other_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["plan"]["cmd"] == f"hvc dvc-yaml --params params.yaml --check --stamp {PLAN_STAMP}"
    roots = [n for n, st in stages.items() if n != "plan" and not any(d.startswith("artifacts/dvc/") and d != PLAN_STAMP for d in st.get("deps", []))]
    assert roots and all(PLAN_STAMP in stages[n]["deps"] for n in roots), roots


@pytest.mark.parametrize(
    ("bench_name", "summary", "expected"),
    [
        ("davis2017", {"JF_mean": 0.7, "J_mean": 0.6}, {"J&F": 0.7}),
        ("vost", {"J_mean": 0.3, "J_last_mean": 0.2}, {"J": 0.3}),
        ("vip", {"mIoU": 0.4}, {"mIoU": 0.4}),
        ("jhmdb", {"PCK@0.1": 0.5, "PCK@0.2": 0.7}, {"PCK@0.1": 0.5}),
        ("ytvos2018", {"status": "needs server score"}, {}),
        ("ytvos2018", {"overall": 0.69}, {"overall": 0.69}),
    ],
)
def test_headline_metrics(bench_name, summary, expected):
    assert headline_metrics(bench_name, summary) == expected
    json.dumps(expected)  # flat JSON, as DVC reads it


REQUIRED = {
    "demo-data": [], "shards": ["--input", "x"], "train": ["--shards", "x"], "propagate": ["--encoder", "random"],
    "evaluate": ["--predictions", "x"], "submission": ["--benchmark", "ytvos2018", "--predictions", "x"],
    "tables": ["--score", "hvc=x"], "figures": ["--predictions", "hvc=x"], "flow": ["--model", "x", "--benchmark", "davis2017"],
}  # fmt: skip


@pytest.mark.parametrize("sub", sorted(REQUIRED))
def test_every_stage_subcommand_takes_the_shared_override(sub, tmp_path, monkeypatch, caplog):
    """Snakemake hands `--config` overrides to every job as --set (and DVC's ablation stages
    theirs): each stage subcommand accepts it and applies it before anything runs."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text((ROOT / "params.yaml").read_text())
    args = [sub, "--params", "params.yaml", "--set", "hvc.alpha=-1", *REQUIRED[sub], "--out", "out"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "hvc.alpha = -1" in errors[-1], (result.output, errors)  # the override was read


def test_a_data_root_outside_the_repository_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text((ROOT / "params.yaml").read_text() + "\n")
    Path("real.yaml").write_text(f"data:\n  root: {tmp_path / 'elsewhere'}\n  benchmarks: [davis2016]\n")
    with pytest.raises(ParamsError, match=r"data.root = .*elsewhere.*inside the repository.*data.sources"):
        dvc_stages(["params.yaml", "real.yaml"], load_params(["params.yaml", "real.yaml"]))
