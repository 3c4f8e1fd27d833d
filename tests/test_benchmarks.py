"""Benchmark families beyond DAVIS: YouTube-VOS (later objects, submission archive, server
scores), VOST (J and J on the last quarter), and their wiring into tables and the workflow."""

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from hvc.config.benchmarks import BENCHMARKS
from hvc.eval.readers import read_benchmark, read_vost
from hvc.eval.predict import propagate_benchmark
from hvc.eval.score import evaluate_benchmark
from hvc.io import DataError, read_mask, write_mask
from hvc.eval.metrics import evaluate_vost_folder, jaccard, statistics
from hvc.config.params import load_params, parse_overrides
from hvc.eval.submission import read_server_scores
from workflow_copy import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
H, W, T = 128, 192, 6


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((H + 32, W + 64, 3)), sigma=(3, 3, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (255 * img).astype(np.uint8)


def _video(seed: int, shift: int = 3, objects=()) -> list[np.ndarray]:
    """T frames of a texture panning right by ``shift`` px per frame, with objects (patches
    of other textures) pasted where ``_box(..., t)`` puts them from their first frame on."""
    big = _texture(seed)
    frames = [big[16 : 16 + H, 32 - t * shift : 32 - t * shift + W].copy() for t in range(T)]
    for y0, x0, size, start, tex_seed in objects:
        patch = _texture(tex_seed)[:size, :size]
        for t in range(start, T):
            frames[t][y0 : y0 + size, x0 + t * shift : x0 + t * shift + size] = patch
    return frames


def _box(y0, x0, size, label, t=0, shift=3) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0 : y0 + size, x0 + t * shift : x0 + t * shift + size] = label
    return m


def _write_frames(folder: Path, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names):
        Image.fromarray(f).save(folder / f"{n}.jpg", quality=95)


@pytest.fixture()
def ytvos(tmp_path) -> Path:
    """A YouTube-VOS valid split: in 'a' object 2 appears at frame 3; in 'b' nothing is
    annotated before frame 2."""
    root = tmp_path / "ytvos2018_val"
    split = root / "valid"
    names = [f"{5 * t:05d}" for t in range(T)]
    meta = {"videos": {}}
    _write_frames(split / "JPEGImages" / "a", _video(0, objects=[(16, 16, 40, 0, 10), (64, 80, 48, 3, 11)]), names)
    write_mask(split / "Annotations" / "a" / f"{names[0]}.png", _box(16, 16, 40, 1))
    write_mask(split / "Annotations" / "a" / f"{names[3]}.png", _box(64, 80, 48, 2, t=3))
    meta["videos"]["a"] = {"objects": {"1": {"category": "x", "frames": names}, "2": {"category": "y", "frames": names[3:]}}}
    _write_frames(split / "JPEGImages" / "b", _video(1, objects=[(40, 40, 40, 2, 12)]), names)
    write_mask(split / "Annotations" / "b" / f"{names[2]}.png", _box(40, 40, 40, 1, t=2))
    meta["videos"]["b"] = {"objects": {"1": {"category": "x", "frames": names[2:]}}}
    (split / "meta.json").write_text(json.dumps(meta))
    return root


def _params(*overrides: str):
    return load_params(
        [ROOT / "params.yaml"],
        parse_overrides(["device=cpu", "propagation.context=3", "propagation.radius=4", "propagation.topk=5", *overrides]),
    )


def test_ytvos_objects_start_at_their_first_annotation(ytvos, tmp_path):
    videos = read_benchmark("ytvos2018", ytvos)
    assert [v.name for v in videos] == ["a", "b"]
    assert videos[0].inputs == (0, 3) and videos[1].inputs == (2,)
    out = tmp_path / "pred"
    propagate_benchmark(_params(), "random", "ytvos2018", ytvos, out)
    a = [read_mask(out / "a" / f"{5 * t:05d}.png") for t in range(T)]
    b = [read_mask(out / "b" / f"{5 * t:05d}.png") for t in range(T)]
    assert all((m != 2).all() for m in a[:3])  # object 2 is not there before its first annotation
    later = read_mask(ytvos / "valid" / "Annotations" / "a" / "00015.png")
    assert ((a[3] == 2) == (later == 2)).all()  # and is exactly its annotation at frame 3
    for t in (4, 5):  # then it is tracked (random-init encoder: IoU 0.43 and 0.72 here; object 1: 0.45, 0.79)
        truth = _box(64, 80, 48, 2, t=t) == 2
        assert ((a[t] == 2) & truth).sum() / ((a[t] == 2) | truth).sum() > 0.3, t
    assert all(m.max() == 0 for m in b[:2])  # nothing to segment before b's first annotation
    first_b = read_mask(ytvos / "valid" / "Annotations" / "b" / "00010.png")
    assert (b[2] == first_b).all() and (b[3] == 1).sum() > 0


def test_ytvos_submission_archive_and_server_scores(ytvos, tmp_path):
    pred = tmp_path / "pred"
    propagate_benchmark(_params(), "random", "ytvos2018", ytvos, pred)
    archive = tmp_path / "sub.zip"
    cmd = ["hvc", "submission", "--params", str(ROOT / "params.yaml"), "--benchmark", "ytvos2018"]
    proc = subprocess.run([*cmd, "--data", str(ytvos), "--predictions", str(pred), "--out", str(archive)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = zipfile.ZipFile(archive).namelist()
    assert sorted(names) == sorted(f"Annotations/{v}/{5 * t:05d}.png" for v in "ab" for t in range(T))
    with zipfile.ZipFile(archive) as zf, zf.open("Annotations/a/00015.png") as f:
        assert (np.array(Image.open(f)) == read_mask(pred / "a" / "00015.png")).all()

    score_file = tmp_path / "server" / "scores.txt"
    summary, _ = evaluate_benchmark(_params(), "ytvos2018", ytvos, pred, None, server_scores=score_file, archive=archive)
    assert "needs server score" in summary["status"] and str(archive) in summary["status"] and str(score_file) in summary["status"]
    score_file.parent.mkdir()
    score_file.write_text("Overall: 71.9\nJ_seen: 70.3\nF_seen: 72.4\nJ_unseen: 67.6\nF_unseen: 77.2\n")
    summary, _ = evaluate_benchmark(_params(), "ytvos2018", ytvos, pred, None, server_scores=score_file, archive=archive)
    assert summary["overall"] == pytest.approx(0.719) and summary["F_unseen"] == pytest.approx(0.772)
    assert "status" not in summary


def test_submission_refuses_a_missing_frame(ytvos, tmp_path):
    pred = tmp_path / "pred"
    propagate_benchmark(_params(), "random", "ytvos2018", ytvos, pred)
    (pred / "b" / "00020.png").unlink()
    archive = tmp_path / "sub.zip"
    cmd = ["hvc", "submission", "--params", str(ROOT / "params.yaml"), "--benchmark", "ytvos2018", "--data", str(ytvos)]
    proc = subprocess.run([*cmd, "--predictions", str(pred), "--out", str(archive)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert str(pred / "b" / "00020.png") in proc.stderr and "missing prediction" in proc.stderr
    assert not archive.exists() and not list(tmp_path.glob("*.zip*"))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n0.617,0.575,0.654,0.1,0.66,0.748,0.12\n", {"JF_mean": 0.617, "F_recall": 0.748}),
        ('{"Overall": 71.6, "J seen": 69.5, "Other": 3}', {"overall": 0.716, "J_seen": 0.695}),
        ("GlobalMean: 0.617\nJMean: 0.575\n", {"JF_mean": 0.617, "J_mean": 0.575}),
    ],
)
def test_server_score_formats(tmp_path, text, expected):
    path = tmp_path / "scores.txt"
    path.write_text(text)
    scores = read_server_scores(path)
    for k, v in expected.items():
        assert scores[k] == pytest.approx(v)


def test_server_score_file_without_scores_is_refused(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("<html>login</html>\n")
    with pytest.raises(DataError, match="no score recognised") as e:
        read_server_scores(path)
    assert str(path) in str(e.value)
    path.write_text("Overall: n/a\n")
    with pytest.raises(DataError, match="not a number"):
        read_server_scores(path)


def test_vost_scores_annotated_frames_and_the_last_quarter(tmp_path):
    root = tmp_path / "VOST"
    n = 14  # frames; every other one annotated → 7 annotated, 5 scored
    names = [f"frame{t:05d}" for t in range(n)]
    _write_frames(root / "JPEGImages" / "s", [np.full((H, W, 3), 128, np.uint8)] * n, names)
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text("s\n")
    rng = np.random.default_rng(0)
    gts, preds = {}, {}
    for t in range(n):
        pred = np.zeros((H, W), np.uint8)
        pred[: rng.integers(5, H), : rng.integers(5, W)] = 1
        preds[t] = pred
        write_mask(tmp_path / "pred" / "s" / f"{names[t]}.png", pred)
        if t % 2 == 0:
            gts[t] = _box(10, 10 + t, 30, 1)
            gts[t][0, 0] = 255  # void counts as background (the toolkit)
            write_mask(root / "Annotations" / "s" / f"{names[t]}.png", gts[t])
    videos = read_vost(root)
    assert len(videos[0].frames) == n and sorted(videos[0].masks) == list(range(0, n, 2))

    scores = evaluate_vost_folder(root / "Annotations", tmp_path / "pred", ["s"])
    scored = [t for t in sorted(gts)][1:-1]  # first and last annotated frames are not scored
    j = np.array([jaccard((gts[t] == 1)[None], (preds[t] == 1)[None])[0] for t in scored])
    last = j[int(np.floor(len(j) * 0.75)) :]
    assert scores["J_mean"] == pytest.approx(j.mean())
    assert scores["J_last_mean"] == pytest.approx(last.mean())
    assert scores["J_last_recall"] == pytest.approx(statistics(last)[1])
    assert set(scores["per_object"]) == {"s_1"}


def test_every_benchmark_has_a_reader_and_a_scoring():
    for name, bench in BENCHMARKS.items():
        assert bench.task in ("vos", "parts", "pose"), name
        assert bench.scoring in ("davis", "vost", "server", "miou", "pck"), name
        assert (bench.scoring == "server") == bool(bench.server), name


def test_workflow_fetches_missing_datasets_and_zips_server_benchmarks(tmp_path):
    """A real run plans a fetch job per missing dataset instead of stopping, and server-scored
    benchmarks get a submission job."""
    config = tmp_path / "real.yaml"
    config.write_text(
        f"data:\n  root: {tmp_path / 'data'}\n  benchmarks: [davis2016, ytvos2018]\n  train_set: demo\nbaselines: []\n"
    )
    ws = copy_workflow(tmp_path / "ws", configs=())
    proc = subprocess.run(
        ["snakemake", "-n", "-p", "all_tables", "--cores", "1", "--configfile", str(config)],
        cwd=ws, capture_output=True, text=True,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert f"hvc fetch davis2016 --root {tmp_path / 'data'}" in log
    assert f"hvc fetch ytvos2018_val --root {tmp_path / 'data'}" in log
    assert "hvc submission" in log and "--benchmark ytvos2018" in log
    assert "hvc flow" in log and "--benchmark ytvos2018" in log  # Table 11's YouTube-VOS column


def test_vip_and_jhmdb_through_the_propagate_and_evaluate_stages(tmp_path):
    """Parts (VIP, 560x560, mIoU) and joints (JHMDB, 320x320, PCK) run through the same
    stage functions as the mask benchmarks, predictions written and read back from disk."""
    from test_parts import _fake_vip, _masks
    from test_pose import _fake_jhmdb

    _fake_vip(tmp_path / "vip", {"videos7": _masks(0), "videos12": _masks(1)})
    p = _params()
    info = propagate_benchmark(p, "random", "vip", tmp_path / "vip", tmp_path / "pred_vip")
    assert info["videos"] == 2 and (tmp_path / "pred_vip" / "videos7").is_dir()
    summary, _ = evaluate_benchmark(p, "vip", tmp_path / "vip", tmp_path / "pred_vip", tmp_path / "vip.json")
    assert 0 < summary["mIoU"] <= 1 and json.loads((tmp_path / "vip.json").read_text())["mIoU"] == summary["mIoU"]

    _fake_jhmdb(tmp_path / "jhmdb")
    info = propagate_benchmark(p, "random", "jhmdb", tmp_path / "jhmdb", tmp_path / "pred_jhmdb")
    assert info["videos"] == 2 and (tmp_path / "pred_jhmdb" / "brush_hair" / "b_test.json").is_file()
    summary, _ = evaluate_benchmark(p, "jhmdb", tmp_path / "jhmdb", tmp_path / "pred_jhmdb", None)
    assert 0 <= summary["PCK@0.1"] <= summary["PCK@0.2"] <= 1 and summary["videos"] == 2
    (tmp_path / "pred_jhmdb" / "catch" / "c_test.json").unlink()
    with pytest.raises(DataError) as e:
        evaluate_benchmark(p, "jhmdb", tmp_path / "jhmdb", tmp_path / "pred_jhmdb", None)
    assert "c_test.json" in str(e.value)
