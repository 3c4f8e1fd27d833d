"""The method contract: every registered method, and a toy method defined outside the package
(tests/toy_method) and registered only through the registry, goes through the same harness:
build, a data spec per training phase, a tiny run through the generic training loop, save
and load of its encoder, its inference on a generated benchmark, content ids and DVC stages
that follow exactly its own parameter section, and its rows in the paper's tables.

A method added to the registry appears here without editing this file.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch

from hvc.config import registry
from hvc.config.dvc import dvc_stages
from hvc.config.ids import stage_ids, stage_reads
from hvc.config.params import ParamsError, load_params, params_model, validate_params
from hvc.config.plan import budget_experiments, plan, run_rows
from hvc.config.published import published_tables
from hvc.data.demo import build_demo
from hvc.data.shards import write_training_shards
from hvc.io import read_json
from hvc.methods import get_method

ROOT = Path(__file__).resolve().parents[1]
TOY = ("toy", "toy_method")
METHODS = [*registry.method_names(), TOY[0]]
TINY_TRAIN = {"crop_size": 32, "batch_size": 2, "max_steps": 4, "workers": 0, "checkpoint_every": 2, "log_every": 1}
# per method: the smallest settings its tiny run needs besides TINY_TRAIN
SMALL = {
    "liir": {"frame_gaps": [1, 2], "frame_gap_probs": [0.5, 0.5], "bank_frames": 4, "phase2_share": 0.5, "batch_size2": 4},
    "hvc": {"proj_dim": 16},
    "stt": {"moco_queue": 8, "moco_hidden": 32, "moco_dim": 16, "spatial_share": 0.5},
    "maskvos": {"corr_share": 0.5, "clusters": 2, "kmeans_iters": 5, "inference": {"rounds": 1, "context": 2}},
}


@pytest.fixture(autouse=True)
def toy_registered():
    """The toy method in the registry for the test, out of it afterwards."""
    registry.register_method(*TOY)
    yield
    registry.unregister_method(TOY[0])


def _params(method: str, **extra):
    data = {"method": method, "device": "cpu", "train": TINY_TRAIN, **extra}
    if method in SMALL:
        data[method] = SMALL[method]
    return validate_params(data)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A tiny demo with training videos (12 frames each) and a 2-video benchmark."""
    base = load_params([ROOT / "params.yaml", ROOT / "tests" / "configs" / "tiny.yaml"]).demo
    small = base.model_copy(update=dict(train_videos=4, train_video_frames=12))
    out = tmp_path_factory.mktemp("contract") / "demo"
    build_demo(small, out, videos=True)
    return out


@pytest.mark.parametrize("name", METHODS)
def test_build_and_a_data_spec_per_phase(name):
    spec = registry.method_spec(name)
    p = _params(name)
    method = get_method(name).build(p)
    phases = method.phases()
    assert tuple(ph.kind for ph in phases) == spec.kinds, "the registry's kinds are the phases' kinds"
    assert sum(ph.share for ph in phases) == pytest.approx(1.0)
    for i, ph in enumerate(phases):
        assert method.data_spec(p, i).kind == ph.kind
    assert get_method(name).encoder_spec().method == name
    if spec.section is not None:
        assert isinstance(getattr(p, name), spec.section)


@pytest.mark.parametrize("name", METHODS)
def test_tiny_run_save_load_and_inference(name, demo, tmp_path):
    from hvc.eval.encoders import load_encoder
    from hvc.eval.predict import propagate_benchmark
    from hvc.train import train

    p = _params(name)
    write_training_shards(p, demo, tmp_path / "shards")
    summary = train(p, tmp_path / "shards", tmp_path / "model", progress=False, verify="size")
    assert summary["steps"] == 4 and summary["method"] == name
    assert [ph["kind"] for ph in summary["phases"]] == list(registry.method_spec(name).kinds)
    assert sum(ph["steps"] for ph in summary["phases"]) == 4
    model = get_method(name).build(p)
    batches = [model.data_spec(p, i).batch_size or p.train.batch_size for i in range(len(summary["phases"]))]
    assert [ph["batch_size"] for ph in summary["phases"]] == batches  # LIIR: 2, then 4 (liir.batch_size2)
    assert summary["samples"] == sum(ph["steps"] * b for ph, b in zip(summary["phases"], batches))
    assert summary["images_per_s"] == pytest.approx(summary["samples"] / summary["train_seconds"])
    assert read_json(tmp_path / "model" / "encoder.json")["method"] == name
    encoder = load_encoder(str(tmp_path / "model" / "encoder.pt"))
    with torch.no_grad():
        feats = encoder(torch.zeros(1, 3, 32, 48), get_method(name).encoder_spec().default_layer)
    assert feats.dim() == 4 and feats.shape[0] == 1
    info = propagate_benchmark(p, str(tmp_path / "model" / "encoder.pt"), "demo", demo / "benchmark", tmp_path / "pred")
    assert info["method"] == name and info["videos"] == 2
    want = "generic" if registry.method_spec(name).inference is None else registry.method_spec(name).inference
    assert info["inference"] == want
    assert len(list((tmp_path / "pred").rglob("*.png"))) == info["frames"] + info["videos"]


def test_the_toy_ran_both_phases_with_their_own_batches(demo, tmp_path):
    from hvc.train import train

    p = _params("toy", toy={"motion_batch": 4, "still_share": 0.25})
    write_training_shards(p, demo, tmp_path / "shards")
    summary = train(p, tmp_path / "shards", tmp_path / "model", progress=False, verify="size")
    assert [(ph["name"], ph["steps"]) for ph in summary["phases"]] == [("still", 1), ("motion", 3)]
    phase = [float(x.split()[-1]) for x in (tmp_path / "model/dvclive/plots/metrics/train/phase.tsv").read_text().splitlines()[1:]]
    assert phase == [0.0, 1.0, 1.0, 1.0]


def _perturbed(section: type, key: str, value: typing.Any) -> list[typing.Any]:
    """Other values the key of ``section`` may take (candidates; the caller validates)."""
    same = list(value) if isinstance(value, tuple) else value
    return [c for c in _candidates(section, key, value) if c != same]


def _candidates(section: type, key: str, value: typing.Any) -> list[typing.Any]:
    field = section.model_fields[key]
    choices = [c for arg in [field.annotation, *typing.get_args(field.annotation)] if typing.get_origin(arg) is typing.Literal for c in typing.get_args(arg)]
    if isinstance(value, bool):
        return [not value]
    if choices:
        return [c for c in choices if c != value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2]
    if isinstance(value, float):
        return [value * 0.5, value * 1.5, value + 0.1, min(1.0, value + 0.05)]
    if value is None:
        return [4, 0.5, "x"]
    if isinstance(value, (list, tuple)) and value:
        return [list(value)[::-1], list(value)[:-1]]
    return []


def _variants(name: str) -> list[tuple[str, typing.Any]]:
    """(key, other value) for every key of the method's section that can take another valid value alone."""
    spec = registry.method_spec(name)
    if spec.section is None:
        return []
    base, out = _params(name), []
    for key in spec.section.model_fields:
        for value in _perturbed(spec.section, key, getattr(getattr(base, name), key)):
            try:
                validate_params({**base.model_dump(exclude_unset=True), name: {**base.model_dump(exclude_unset=True).get(name, {}), key: value}})
            except ParamsError:
                continue
            out.append((key, value))
            break
    return out


@pytest.mark.parametrize("name", METHODS)
def test_ids_follow_exactly_the_method_section(name):
    base = _params(name)
    variants = _variants(name)
    if registry.method_spec(name).section is not None:
        assert len(variants) >= len(registry.method_spec(name).section.model_fields) // 2, variants
    ids = stage_ids(base)
    for key, value in variants:
        changed = stage_ids(validate_params({**base.model_dump(exclude_unset=True), name: {**(base.model_dump(exclude_unset=True).get(name) or {}), key: value}}))
        assert changed["train"] != ids["train"], f"{name}.{key}"
        assert changed["demo_data"] == ids["demo_data"] and changed["shards"] == ids["shards"] and changed["evaluate"] == ids["evaluate"]
        inference_key = key in registry.method_spec(name).inference_keys
        assert (changed["propagate"] != ids["propagate"]) == inference_key, f"{name}.{key}"
    for other in METHODS:  # another method's knobs change nothing of this method's experiments
        if other == name or registry.method_spec(other).section is None:
            continue
        for key, value in _variants(other)[:3]:
            changed = stage_ids(validate_params({**base.model_dump(exclude_unset=True), other: {key: value}}))
            assert changed == ids, f"{other}.{key} changed an id of {name}"


@pytest.mark.parametrize("name", METHODS)
def test_dvc_stages_list_the_method_section_and_no_other(name, tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    sections = {m: {} for m in METHODS if registry.method_spec(m).section is not None}
    for m in sections:
        sections[m] = dict(_variants(m)[:1])
    params = {"method": name, "device": "cpu", "train": TINY_TRAIN, **{m: {**SMALL.get(m, {}), **v} for m, v in sections.items()}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    p = load_params(["params.yaml"])
    stages = dvc_stages(["params.yaml"], p)
    train = stages[f"train-{name}"]["params"][0]["params.yaml"]
    listed = {k.split(".")[0] for k in train}
    assert (name in listed) == (name in sections), train
    assert not listed & (set(sections) - {name}), train
    for key in stage_reads("train", p).keys:
        assert any(k == key or k.startswith(key + ".") for k in train) or key not in params and "." not in key, key
    reads = stage_reads("train", p)
    assert set(stages[f"train-{name}"]["deps"]) >= set(reads.code_files())


@pytest.mark.parametrize("name", METHODS)
def test_its_table_rows(name):
    spec = registry.method_spec(name)
    tables = published_tables()
    mine = [(t, r) for t, table in tables.items() for r in table["rows"] if r.get("overrides", {}).get("method") == name]
    if spec.published is None:
        assert not mine
        return
    assert mine and all(r["encoder"] == "trained" for _, r in mine)
    benchmarks = sorted({b for t, _ in mine for b in tables[t].get("benchmarks", ["demo"])} - {"davis2017_testdev"})
    other = next(m for m in METHODS if m != name)
    p = validate_params({"method": other, "compare": [name], "data": {"benchmarks": benchmarks[:1] or ["demo"]}})
    rows = {(t, r["label"]) for t, r, _ in run_rows(p)}
    shown = [(t, r["label"]) for t, r in mine if (t, r["label"]) in rows]
    assert shown, f"{name}'s rows are not planned when compare lists it"
    exps = plan(p)
    assert any(e.params.method == name and e.trained for e in exps.values())


@pytest.mark.parametrize("name", METHODS)
def test_its_equal_budget_rows(name):
    """In the equal-budget table every method is trained and at random initialisation; one
    with its own inference (its registry entry) is also propagated generically; its trained
    rows share one model, its random rows propagate the method's untrained encoder."""
    other = next(m for m in METHODS if m != name)
    exps = [e for e in budget_experiments(validate_params({"method": other, "compare": [name]})).values() if e.params.method == name]
    paths = ["method", "generic"] if registry.method_spec(name).inference is not None else ["method"]
    assert sorted((e.trained, e.params.propagation.inference) for e in exps) == sorted((t, i) for t in (True, False) for i in paths)
    assert len({e.ids["train"] for e in exps if e.trained}) == 1
    assert all(e.encoder == "random" and e.encoder_method == name for e in exps if not e.trained)


def test_the_registry_drives_the_parameter_model():
    model = params_model()
    assert "toy" in typing.get_args(model.model_fields["method"].annotation)
    assert "toy" in model.model_fields
    with pytest.raises(ValueError, match="already registered"):
        registry.register_method("toy", "elsewhere")
    registry.unregister_method("toy")
    assert "toy" not in params_model().model_fields
    with pytest.raises(ParamsError, match="toy"):
        validate_params({"method": "toy"})


def test_a_time_budget_is_split_between_the_phases(demo, tmp_path):
    """Under train.max_seconds each phase gets its share of the wall time (a method's second
    phase is never starved by the first), and the steps each phase ran are in train.json."""
    from hvc.data.shards import write_training_shards
    from hvc.device import Dist
    from hvc.train import _phase_over, _phase_plans, _Run

    p = _params("toy", train={**TINY_TRAIN, "max_steps": None, "max_seconds": 10.0, "epochs": 50}, toy={"still_share": 0.25})
    write_training_shards(p, demo, tmp_path / "shards")
    model = get_method("toy").build(p)
    plans = _phase_plans(p, model, tmp_path / "shards", Dist(0, 1, 0))
    assert [plan.seconds for plan in plans] == [2.5, 7.5]
    run = _Run(p=p, device=torch.device("cpu"), d=Dist(0, 1, 0), model=model, plans=plans, bf16=False, config_id="x", work=tmp_path, shard_dir=tmp_path)
    run.phase, run.starts, run.step = 0, [(0, 0.0)], 3
    run.elapsed = 2.4
    assert not _phase_over(run)  # phase 1 has time left and steps left
    run.elapsed = 2.6
    assert _phase_over(run)  # its 2.5 s are used: phase 2 starts, with 7.5 s of its own
    run.phase, run.starts = 1, [(0, 0.0), (3, 2.6)]
    run.elapsed = 9.9
    assert not _phase_over(run) and _phase_over(_with(run, elapsed=10.2))


def _with(run, **changes):
    import dataclasses

    return dataclasses.replace(run, **changes)


@pytest.mark.parametrize("method", METHODS)
def test_the_shipped_params_give_each_method_a_layer_its_encoder_has(method):
    """Under params.yaml (and the comparison config) the generic label propagation of a
    method's encoder reads a layer that encoder outputs: a key the files set for HVC
    (e.g. ``propagation.feature_layer: layer3``) would otherwise hide the method's preset
    and fail on Mask-VOS's encoder, which has no layer3."""
    from hvc.config.params import propagation_for
    from hvc.eval.encoders import load_encoder

    encoder = load_encoder("random", seed=0, method=method)
    for files in ([ROOT / "params.yaml"], [ROOT / "params.yaml", ROOT / "configs" / "compare.yaml"]):
        layer = propagation_for(load_params(files), method).feature_layer
        with torch.no_grad():
            features = encoder(torch.rand(1, 3, 64, 64), layer)
        assert features.ndim == 4 and features.shape[0] == 1, (method, layer)
