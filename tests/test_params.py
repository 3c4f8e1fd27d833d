"""params.yaml validation: every mistake stops the run with one message naming key and value."""

from pathlib import Path

import pytest
import yaml

from hvc.config.plan import plan
from hvc.config.params import ParamsError, load_params, parse_overrides
from hvc.config.ids import stage_ids

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_and_paper_config_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.data.train_set == "demo"
    paper = load_params([ROOT / "params.yaml", ROOT / "configs/paper.yaml"])
    assert paper.data.train_set == "coco" and paper.train.batch_size == 128 and paper.train.crop_size == 256
    assert paper.train.epochs == 20 and paper.train.lr == 1e-3 and paper.hvc.radius == 0.1


@pytest.mark.parametrize(
    "text,needle",
    [
        ("train:\n  alpah: 1.0\n", "train.alpah = 1.0: unknown key"),
        ("hvc:\n  radius: -0.1\n", "hvc.radius = -0.1"),
        ("propagation:\n  topk: 0\n", "propagation.topk = 0"),
        ("train:\n  batch_size: many\n", "train.batch_size = 'many'"),
        ("data:\n  train_set: imagenet\n", "data.train_set = 'imagenet'"),
        ("ablations: [table9]\n", "unknown table"),
        ("hvc:\n  static: false\n  dynamic: false\n", "nothing to train"),
    ],
)
def test_bad_values_name_key_and_value(tmp_path, text, needle):
    with pytest.raises(ParamsError) as e:
        load_params(write(tmp_path, text))
    assert needle in str(e.value)
    assert str(tmp_path / "params.yaml") in str(e.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(write(tmp_path, "- a\n- b\n"))


def test_overrides_merge_and_change_only_dependent_ids(tmp_path):
    base = load_params(ROOT / "params.yaml")
    changed = load_params(ROOT / "params.yaml", parse_overrides(["hvc.alpha=0.5"]))
    assert changed.hvc.alpha == 0.5
    a, b = stage_ids(base), stage_ids(changed)
    assert a["demo_data"] == b["demo_data"] and a["shards"] == b["shards"] and a["propagate"] == b["propagate"]
    assert a["train"] != b["train"]
    stepped = stage_ids(load_params(ROOT / "params.yaml", parse_overrides(["shards.step=5"])))
    assert stepped["shards"] != a["shards"] and stepped["train"] != a["train"] and stepped["demo_data"] == a["demo_data"]


def test_crw_preset_sets_its_values(tmp_path):
    p = load_params(write(tmp_path, "propagation:\n  preset: crw\n"))
    assert (p.propagation.topk, p.propagation.context, p.propagation.temperature) == (10, 20, 0.05)


def test_ablation_grid_has_one_experiment_per_distinct_model(tmp_path):
    text = yaml.safe_dump({"ablations": ["table7c", "table7d"]})
    p = load_params(write(tmp_path, text))
    exps = plan(p)
    models = [e.ids["train"] for k, e in exps.items() if k not in ("random", "imagenet")]
    assert len(models) == len(set(models))
    # the row equal to the base setting (alpha 1.0, radius 0.1) is the base model itself
    assert "hvc.alpha=1.0" not in exps and "hvc.radius=0.1" not in exps
    assert {"hvc.alpha=0.1", "hvc.alpha=0.5", "hvc.alpha=2.0", "hvc.radius=0.01"} <= set(exps)


def test_a_real_run_without_its_dataset_folder_stops_early(tmp_path):
    from hvc.config.params import check_data_root

    p = load_params([ROOT / "params.yaml", ROOT / "configs/paper.yaml"], parse_overrides([f"data.root={tmp_path / 'nope'}"]))
    with pytest.raises(ParamsError, match="data.root"):
        check_data_root(p)
    (tmp_path / "nope").mkdir()
    check_data_root(p)  # present: fine
    check_data_root(load_params(ROOT / "params.yaml", parse_overrides([f"data.root={tmp_path / 'x'}"])))  # demo needs none


def test_paper_setting_trains_only_the_base_model_unless_ablations_are_listed():
    paper = load_params([ROOT / "params.yaml", ROOT / "configs/paper.yaml"])
    trained = [k for k in plan(paper) if k not in ("random", "imagenet")]
    assert trained == ["hvc"]  # HVC-YT (Table 1/3) needs YouTube-VOS: only with table7e listed
    with_e = load_params([ROOT / "params.yaml", ROOT / "configs/paper.yaml"], parse_overrides(["ablations=[table7e]"]))
    assert "data.train_set=ytvos" in plan(with_e)


def test_an_explicit_key_wins_over_the_preset(tmp_path):
    p = load_params(write(tmp_path, "propagation:\n  preset: crw\n  topk: 5\n"))
    assert p.propagation.topk == 5  # explicit
    assert (p.propagation.context, p.propagation.temperature) == (20, 0.05)  # left out: the preset's
    # the repository's params.yaml leaves topk/temperature/radius to the defaults, so a preset applies
    crw = tmp_path / "crw.yaml"
    crw.write_text("propagation:\n  preset: crw\n")
    q = load_params([ROOT / "params.yaml", crw])
    assert (q.propagation.topk, q.propagation.temperature, q.propagation.context) == (10, 0.05, 20)


def test_effective_view_names_value_origin_and_choices(tmp_path):
    from hvc.config.params import effective_rows

    crw = tmp_path / "crw.yaml"
    crw.write_text("propagation:\n  preset: crw\n  topk: 5\nhvc:\n  augment: color\n")
    rows = {r[0]: r for r in effective_rows([ROOT / "params.yaml", crw])}
    assert rows["hvc.augment"][1:3] == ("color", str(crw))
    assert rows["hvc.augment"][3] == "one of crop, affine, color, blur"
    assert rows["propagation.topk"][1] == "5" and "wins over preset crw: 10" in rows["propagation.topk"][2]
    assert rows["propagation.temperature"][1:3] == ("0.05", "preset crw")
    assert rows["train.epochs"][1:3] == ("8", str(ROOT / "params.yaml"))
    assert rows["train.gpus"][2] == "default" and rows["train.max_steps"][3] == "null or >= 1"
    assert rows["data.benchmarks"][1] == "[demo]" and rows["data.benchmarks"][3].startswith("items from demo, davis2017, davis2016")


def test_the_committed_json_schema_is_the_models():
    """workflow/schemas/params.schema.json is exported from the pydantic model; regenerate it
    with `hvc params --schema workflow/schemas/params.schema.json` after changing a field."""
    from hvc.config.params import SCHEMA_PATH, params_json_schema_text

    assert SCHEMA_PATH.read_text() == params_json_schema_text(), "stale schema: run hvc params --schema " + str(SCHEMA_PATH)


def test_the_json_schema_checks_what_pydantic_checks():
    import jsonschema

    from hvc.config.params import deep_merge, params_json_schema

    schema = params_json_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    for files in (["params.yaml"], ["params.yaml", "configs/paper.yaml"]):
        merged = {}
        for f in files:
            merged = deep_merge(merged, yaml.safe_load((ROOT / f).read_text()))
        assert list(validator.iter_errors(merged)) == []
    for bad in ({"train": {"alpah": 1}}, {"propagation": {"topk": 0}}, {"data": {"train_set": "imagenet"}}):
        assert list(validator.iter_errors(bad)), bad


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  alpha: 0.5\n", "train.alpha moved to hvc.alpha"),
        ("train:\n  radius_unit: image\n", "train.radius_unit moved to hvc.radius_unit"),
        ("clips:\n  size: 64\n", "clips.size moved to train.crop_size"),
        ("clips:\n  length: 3\n", "clips.length is no longer a parameter"),
    ],
)
def test_moved_keys_are_refused_with_one_line_naming_the_new_key(tmp_path, text, message):
    f = tmp_path / "old.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError) as err:
        load_params([ROOT / "params.yaml", f])
    assert message in str(err.value) and str(f) in str(err.value) and "\n" not in str(err.value)


def test_each_method_has_its_own_section_and_the_loop_keeps_the_shared_keys():
    p = load_params(ROOT / "params.yaml")
    assert p.hvc.alpha == 1.0 and p.liir.bank_frames == 1440
    assert not any(hasattr(p.train, k) for k in ("alpha", "radius", "static", "proj_dim", "momentum"))
    assert {"crop_size", "batch_size", "epochs", "lr", "precision", "workers", "checkpoint_every"} <= set(type(p.train).model_fields)
