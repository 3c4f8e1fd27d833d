"""Security and data safety: nothing in a shared file runs as code, no stage writes outside its
outputs or replaces a file or folder it did not write, no input is destroyed, and a changed
dataset is never mistaken for the one a stage's output was built from.

Each test stages one hostile or careless use through the real entry point (the ``hvc`` CLI
in-process, Snakemake in a subprocess, or the module's API where there is no CLI) and asserts
what must not happen did not (no code ran, no file changed) and what the user sees (one line,
exit code 2, naming the file or key).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hvc.data.shards import list_training_images, write_shards
from hvc.config.ids import stage_ids
from hvc.data.download import STAMP_NAME, fetch_from
from hvc.config.sources import dataset_fingerprint
from hvc.config.params import ParamsError, load_params, parse_overrides
from hvc.io import read_json, read_mask, write_mask
from test_bad_input import PARAMS, assert_fails, hvc_cli
from test_existing_data import make_davis
from workflow_copy import copy_workflow

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file below ``folder`` (symbolic links as their target)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def shard_dir(demo_dir, tmp_path) -> Path:
    out = tmp_path / "shards"
    write_shards(list_training_images(demo_dir, "demo"), demo_dir, out, "demo-train", max_count=8)
    return out


# --------------------------------------------------------------------------- 1. the resumable checkpoint is loaded weights-only


class _RunsCode:
    """A pickle that runs ``touch <marker>`` when loaded with a full (not weights-only) unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(ckpt: Path, kind: str, marker: Path) -> None:
    ckpt.parent.mkdir(parents=True)
    if kind == "code":
        torch.save({"config_id": _RunsCode(marker)}, ckpt)
    elif kind == "not_a_dict":
        torch.save(torch.zeros(3), ckpt)
    elif kind == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    else:  # corrupt
        ckpt.write_bytes(b"PK\x03\x04 this is not a checkpoint")


@pytest.mark.parametrize("kind", ["code", "not_a_dict", "foreign_dict", "corrupt"])
def test_train_never_runs_code_from_a_planted_checkpoint(caplog, tmp_path, shard_dir, kind):
    out = tmp_path / "model"
    ckpt = tmp_path / ".model.work" / "checkpoint.pt"
    marker = tmp_path / "owned"
    _plant(ckpt, kind, marker)
    args = ["train", *PARAMS, "--shards", shard_dir, "--out", out]
    message = assert_fails(caplog, args, ckpt, "delete", out=out)
    assert not marker.exists(), "loading the checkpoint ran code"
    assert "cannot resume" in message


# --------------------------------------------------------------------------- 3. sequence names from a list file stay inside --out


@pytest.mark.parametrize("how", ["dotdot", "absolute", "nested"])
def test_propagate_refuses_an_image_set_line_that_leaves_the_output(caplog, tmp_path, bench, how):
    """A bring-your-own val.txt naming ``../victim`` or an absolute path (each a real sequence
    folder, so only the name check stops it) must not make propagate write PNGs outside
    --out; one line naming the list file and the line."""
    first = sorted((bench / "JPEGImages" / "480p").iterdir())[0]
    victim = tmp_path / "pred" / "victim"
    if how == "dotdot":  # JPEGImages/480p/../victim is a sequence; <out>/../victim is another folder
        listed = "../victim"
        shutil.copytree(first, bench / "JPEGImages" / "victim")
        shutil.copytree(bench / "Annotations" / "480p" / first.name, bench / "Annotations" / "victim")
        victim.mkdir(parents=True)
        (victim / "00000.png").write_bytes(b"precious")
    elif how == "absolute":  # an absolute name is the frame, mask and output folder at once
        listed = str(victim)
        shutil.copytree(first, victim)
        for mask in (bench / "Annotations" / "480p" / first.name).iterdir():
            shutil.copy(mask, victim / mask.name)
    else:
        listed = f"{first.name}/inner"
        shutil.copytree(first, first / "inner")
        shutil.copytree(bench / "Annotations" / "480p" / first.name, bench / "Annotations" / "480p" / listed)
    before = tree_digest(victim) if victim.exists() else {}
    split = bench / "ImageSets" / "2017" / "val.txt"
    split.write_text(f"{first.name}\n{listed}\n")
    out = tmp_path / "pred" / "out"
    args = ["propagate", *PARAMS, "--encoder", "random", "--benchmark", "demo", "--data", bench, "--out", out]
    assert_fails(caplog, args, split, "line 2", out=out)
    assert (tree_digest(victim) if victim.exists() else {}) == before


# --------------------------------------------------------------------------- 6, 13. `hvc fetch --from` never deletes data, recovers its own leftovers


def test_fetch_from_another_folder_keeps_a_dataset_adopted_in_place(caplog, tmp_path):
    """`--from data/<name>` adopts the folder in place; a later `--from OTHER` must not
    replace that folder (the only copy) with links: one line saying how to proceed."""
    root = tmp_path / "data"
    own = make_davis(root / "davis2017_trainval" / "DAVIS")
    other = make_davis(tmp_path / "lab" / "DAVIS", sequences=("cow",))
    code, _, errors = hvc_cli(caplog, "fetch", "davis2017_trainval", "--root", root, "--from", root / "davis2017_trainval")
    assert code == 0, errors
    before = tree_digest(own)
    code, _, errors = hvc_cli(caplog, "fetch", "davis2017_trainval", "--root", root, "--from", other)
    assert code == 2 and len(errors) == 1, errors
    assert str(root / "davis2017_trainval") in errors[0] and "move" in errors[0] and "--from" in errors[0]
    assert not (root / "davis2017_trainval" / "DAVIS").is_symlink()
    assert tree_digest(own) == before


def test_fetch_from_recovers_the_links_of_a_killed_run(caplog, tmp_path):
    """A run killed after making the links but before the stamp (or two runs at once)
    leaves links without a stamp; the next run links again instead of refusing."""
    root = tmp_path / "data"
    lab = make_davis(tmp_path / "lab" / "DAVIS")
    target = root / "davis2017_trainval"
    target.mkdir(parents=True)
    (target / "DAVIS").symlink_to(lab, target_is_directory=True)  # the state a kill leaves
    before = tree_digest(lab)
    code, _, errors = hvc_cli(caplog, "fetch", "davis2017_trainval", "--root", root, "--from", lab)
    assert code == 0, errors
    assert read_json(target / STAMP_NAME)["source"] == str(lab.resolve())
    assert (target / "DAVIS").resolve() == lab.resolve() and tree_digest(lab) == before


# --------------------------------------------------------------------------- 11. silently wrong: greyscale predictions, bools for numbers


def test_greyscale_predictions_of_a_multi_object_sequence_are_a_warning(caplog, tmp_path, bench):
    """0/255 greyscale predictions hold one object: on a sequence of two objects the second
    is scored as missed; the scores and the log say so."""
    seq = bench / "Annotations/480p/demo-00"
    for png in sorted(seq.glob("*.png")):  # two objects in every frame: the demo's and a square
        labels = read_mask(png)
        labels[labels > 0] = 1
        labels[:6, :6] = 2
        write_mask(png, labels)
    pred = Path(shutil.copytree(bench / "Annotations/480p", tmp_path / "pred"))
    for png in (pred / "demo-00").glob("*.png"):
        Image.fromarray(np.where(read_mask(png) > 0, 255, 0).astype(np.uint8), mode="L").save(png)
    out = tmp_path / "scores.json"
    with caplog.at_level(logging.WARNING):
        code, _, errors = hvc_cli(caplog, "evaluate", *PARAMS, "--benchmark", "demo", "--data", bench, "--predictions", pred, "--out", out)
    assert code == 0, errors
    warnings = [w for w in read_json(out).get("warnings", []) if "greyscale" in w]
    assert len(warnings) == 1 and "demo-00" in warnings[0] and "2 objects" in warnings[0], read_json(out).get("warnings")
    assert any("greyscale" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("override", ["liir.frame_gaps=[true, 5, 8]", "hvc.alpha=true", "seed=false", "hvc.scale=[0, true]"])
def test_true_or_false_is_not_taken_for_a_number(override):
    with pytest.raises(ParamsError, match=re.escape(override.split("=")[0]) + ".*true/false where a number"):
        load_params([ROOT / "params.yaml"], parse_overrides([override]))


# --------------------------------------------------------------------------- 2. every value that reaches a shell is quoted


def _snakemake(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", *args], cwd=ws, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow  # Snakemake parses the workflow: about 15 s
def test_fetch_rule_uses_a_hostile_source_path_as_a_path(tmp_path):
    """data.sources naming a folder whose name holds an apostrophe, spaces and ``$(...)``:
    the real fetch rule links that folder, and nothing in its name runs."""
    lab = make_davis(tmp_path / "lab" / "John's $(touch owned) DAVIS'")
    ws = copy_workflow(tmp_path / "ws", configs=())
    (ws / "mine.yaml").write_text(yaml.safe_dump({"data": {"root": "data", "sources": {"davis2017_trainval": str(lab)}}}))
    stamp = "data/davis2017_trainval/.hvc-fetch.json"
    proc = _snakemake(ws, "--cores", "1", stamp, "--configfile", "mine.yaml")
    assert not (ws / "owned").exists() and not list(tmp_path.rglob("owned")), "a shell command in the path ran"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(ws / stamp)["source"] == str(lab.resolve())
    assert (ws / "data/davis2017_trainval/DAVIS").resolve() == lab.resolve()


# --------------------------------------------------------------------------- 4, 5. one rule for every output option


@pytest.fixture
def scored(tmp_path, bench, caplog) -> tuple[Path, Path, Path]:
    """(benchmark, predictions = a copy of its ground truth, scores.json of those predictions)."""
    pred = Path(shutil.copytree(bench / "Annotations/480p", tmp_path / "pred"))
    scores = tmp_path / "scores" / "demo.json"
    code, _, errors = hvc_cli(caplog, "evaluate", *PARAMS, "--benchmark", "demo", "--data", bench, "--predictions", pred, "--out", scores)
    assert code == 0, errors
    return bench, pred, scores


@pytest.mark.parametrize("option", ["--toolkit-csv", "--metrics"])
@pytest.mark.parametrize("target", ["predictions", "annotations", "image_set"])
def test_evaluate_never_writes_over_its_inputs(caplog, tmp_path, scored, option, target):
    bench, pred, _ = scored
    path = {"predictions": pred, "annotations": bench / "Annotations", "image_set": bench / "ImageSets/2017/val.txt"}[target]
    before = {"bench": tree_digest(bench), "pred": tree_digest(pred)}
    out = tmp_path / "again.json"
    args = ["evaluate", *PARAMS, "--benchmark", "demo", "--data", bench, "--predictions", pred, "--out", out, option, path]
    message = assert_fails(caplog, args, path, option, out=out)
    assert "input" in message
    assert {"bench": tree_digest(bench), "pred": tree_digest(pred)} == before


def test_tables_out_is_never_the_folder_of_its_scores(caplog, tmp_path, scored):
    _, _, scores = scored
    before = tree_digest(scores.parent)
    args = ["tables", *PARAMS, "--score", f"hvc:demo={scores}", "--out", scores.parent]
    code, _, errors = hvc_cli(caplog, *args)
    assert code == 2 and len(errors) == 1 and str(scores) in errors[0] and "contains the input --score" in errors[0], errors
    assert tree_digest(scores.parent) == before


def test_figures_out_is_never_the_model_it_reads(caplog, tmp_path, shard_dir, bench, demo_dir):
    model = tmp_path / "model"
    code, _, errors = hvc_cli(caplog, "train", *PARAMS, "--shards", shard_dir, "--out", model)
    assert code == 0, errors
    before = tree_digest(model)
    pred = Path(shutil.copytree(bench / "Annotations/480p", tmp_path / "pred"))
    args = ["figures", *PARAMS, "--predictions", f"hvc:demo={pred}", "--demo", demo_dir, "--model", model, "--out", model]
    code, _, errors = hvc_cli(caplog, *args)
    assert code == 2 and len(errors) == 1 and "output is the input --model" in errors[0], errors
    assert tree_digest(model) == before


@pytest.mark.parametrize("existing", ["file", "folder"])
def test_an_output_never_replaces_what_the_stage_did_not_write(caplog, tmp_path, existing):
    """`hvc demo-data --out FILE` turned an existing file into a folder; a folder of the
    user's is kept as well. The stage's own earlier output is replaced."""
    out = tmp_path / "thesis"
    if existing == "file":
        out.write_text("three years of work\n")
    else:
        out.mkdir()
        (out / "chapter1.tex").write_text("three years of work\n")
    before = out.read_text() if existing == "file" else tree_digest(out)
    code, _, errors = hvc_cli(caplog, "demo-data", *PARAMS, "--out", out)
    assert code == 2 and len(errors) == 1 and str(out) in errors[0] and "did not write" in errors[0], errors
    assert (out.read_text() if existing == "file" else tree_digest(out)) == before
    mine = tmp_path / "demo"
    for _ in range(2):  # its own earlier output is recognised (manifest.json's provenance) and replaced
        code, _, errors = hvc_cli(caplog, "demo-data", *PARAMS, "--out", mine)
        assert code == 0, errors


# --------------------------------------------------------------------------- tracebacks that are one line now (exit 2, naming the key or file)


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (["hvc.alpha=[1"], "hvc.alpha"),
        (["hvc=5", "hvc.alpha=1"], "hvc"),
        (["hvc.alpha=!!python/object/apply:os.system [touch owned]"], "hvc.alpha"),
    ],
)
def test_a_bad_override_is_one_line(caplog, tmp_path, monkeypatch, sets, named):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    args = ["demo-data", *PARAMS, *[a for s in sets for a in ("--set", s)], "--out", out]
    assert_fails(caplog, args, named, out=out)
    assert not (tmp_path / "owned").exists()


def test_a_python_tag_in_a_params_file_is_one_line(caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system [touch owned]\n")
    out = tmp_path / "demo"
    message = assert_fails(caplog, ["demo-data", "--params", evil, "--out", out], evil, out=out, problem="not valid YAML")
    assert "\n" not in message and not (tmp_path / "owned").exists()


def test_a_long_output_name_is_written_or_one_line(caplog, tmp_path):
    """The temporary beside the output must not be what exceeds the name limit (255 bytes)."""
    fits = tmp_path / ("a" * 250 + ".json")
    code, _, errors = hvc_cli(caplog, "params", "--schema", fits)
    assert code == 0 and fits.is_file(), errors
    too_long = tmp_path / ("b" * 300 + ".json")
    code, output, errors = hvc_cli(caplog, "params", "--schema", too_long)
    assert code == 2 and len(errors) == 1 and str(too_long) in errors[0] and "cannot write the output" in errors[0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == [fits.name]  # no temporary left


def test_an_output_folder_without_write_permission_is_one_line(caplog, tmp_path, monkeypatch):
    import errno
    import tempfile

    folder = tmp_path / "locked"
    folder.mkdir()

    def denied(*args, dir=None, **kwargs):  # what a folder without write permission answers (also for root on NFS)
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / "tmpname"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = folder / "schema.json"
    assert_fails(caplog, ["params", "--schema", out], out, out=out, problem="Permission denied")


@pytest.mark.parametrize("damage", ["files_null", "no_mtime", "a_list"])
def test_a_damaged_manifest_is_one_line(caplog, tmp_path, damage):
    root = tmp_path / "data"
    lab = make_davis(tmp_path / "lab" / "DAVIS")
    fetch = ["fetch", "davis2017_trainval", "--root", root, "--from", lab]
    code, _, errors = hvc_cli(caplog, *fetch)
    assert code == 0, errors
    manifest = root / "davis2017_trainval" / ".hvc-manifest.json"
    data = read_json(manifest)
    if damage == "files_null":
        data["files"] = None
    elif damage == "no_mtime":
        del data["files"][0]["mtime_ns"]
    else:
        data = data["files"]
    manifest.write_text(json.dumps(data))
    code, _, errors = hvc_cli(caplog, *fetch)
    assert code == 2 and len(errors) == 1 and str(manifest) in errors[0] and "delete" in errors[0], errors


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", ["file_to_itself", "folder_to_parent"])
def test_a_symlink_loop_in_a_source_is_one_line(caplog, tmp_path, loop):
    root = tmp_path / "data"
    lab = make_davis(tmp_path / "lab" / "DAVIS")
    seq = lab / "JPEGImages/480p/bear"
    if loop == "file_to_itself":
        (seq / "00009.jpg").symlink_to(seq / "00009.jpg")
    else:
        (seq / "again").symlink_to(lab / "JPEGImages", target_is_directory=True)
    code, _, errors = hvc_cli(caplog, "fetch", "davis2017_trainval", "--root", root, "--from", lab)
    assert code == 2 and len(errors) == 1 and str(seq) in errors[0], errors


@pytest.mark.timeout(120)
def test_a_data_root_inside_its_source_is_one_line(caplog, tmp_path):
    lab = make_davis(tmp_path / "lab" / "DAVIS")
    root = lab / "data"
    before = tree_digest(lab)
    code, _, errors = hvc_cli(caplog, "fetch", "davis2017_trainval", "--root", root, "--from", lab)
    assert code == 2 and len(errors) == 1 and str(lab) in errors[0] and "inside the input --from" in errors[0], errors
    assert tree_digest(lab) == before


def test_flow_without_the_raft_weights_offline_is_one_line(caplog, tmp_path, bench, monkeypatch):
    import hvc.eval.flow as flow

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(flow, "raft_large", offline)
    monkeypatch.setattr(flow, "load_hvc", lambda *a, **k: None)
    out = tmp_path / "flow.json"
    args = ["flow", *PARAMS, "--model", tmp_path / "model", "--benchmark", "demo", "--data", bench, "--out", out]
    assert_fails(caplog, args, "RAFT", out=out, problem="place the file at")


# --------------------------------------------------------------------------- 7. the dataset's content is part of the ids


def _voc(folder: Path, images: int = 2) -> Path:
    jpegs = folder / "VOCdevkit/VOC2012/JPEGImages"
    jpegs.mkdir(parents=True)
    for i in range(images):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(jpegs / f"2008_{i:06d}.jpg")
    return folder


def test_a_changed_training_set_gives_new_shards_and_model_ids(tmp_path):
    """A source folder of data.sources that gains a file must not keep its shards id (nor
    the model's): the workflow would reuse, or a shared cache hand over, shards of other data."""
    lab = _voc(tmp_path / "lab" / "voc")
    root = tmp_path / "data"
    p = load_params([ROOT / "params.yaml"], {"data": {"train_set": "voc", "root": str(root), "sources": {"voc2012_trainval": str(lab)}}})
    first = stage_ids(p)
    fetch_from("voc2012_trainval", root, lab, progress=False)  # linking and hashing change nothing
    dataset_fingerprint.cache_clear()
    assert stage_ids(p) == first
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(lab / "VOCdevkit/VOC2012/JPEGImages/2012_000001.jpg")
    dataset_fingerprint.cache_clear()
    changed = stage_ids(p)
    assert changed["shards"] != first["shards"] and changed["train"] != first["train"]
    assert changed["propagate"] == first["propagate"] and changed["demo_data"] == first["demo_data"]
    other = _voc(tmp_path / "other" / "voc", images=3)  # another dataset at the same data.root
    q = load_params([ROOT / "params.yaml"], {"data": {"train_set": "voc", "root": str(root), "sources": {"voc2012_trainval": str(other)}}})
    assert stage_ids(q)["shards"] not in (first["shards"], changed["shards"])


@pytest.mark.slow  # two Snakemake runs: about 30 s
def test_workflow_fetches_again_when_the_source_folder_changes(tmp_path):
    lab = make_davis(tmp_path / "lab" / "DAVIS")
    ws = copy_workflow(tmp_path / "ws", configs=())
    (ws / "mine.yaml").write_text(yaml.safe_dump({"data": {"root": "data", "sources": {"davis2017_trainval": str(lab)}}}))
    stamp = "data/davis2017_trainval/.hvc-fetch.json"
    proc = _snakemake(ws, "--cores", "1", stamp, "--configfile", "mine.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copy(lab / "JPEGImages/480p/bear/00000.jpg", lab / "JPEGImages/480p/bear/00003.jpg")  # the folder gains a file
    proc = _snakemake(ws, "--cores", "1", stamp, "--configfile", "mine.yaml")
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "content changed since the last fetch (13 files before, 14 now)" in (ws / "logs/fetch/davis2017_trainval.log").read_text()
    assert read_json(ws / stamp)["num_files"] == 14
