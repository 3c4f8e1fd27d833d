"""JHMDB pose tracking: reading the layout, heatmaps and readout, PCK, known motion is followed."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from hvc.io import DataError
from hvc.eval.pose import (
    PoseVideo,
    evaluate_pose,
    heatmaps_to_joints,
    joints_to_heatmaps,
    pck,
    propagate_pose,
    read_jhmdb,
    read_pose,
    write_pose,
)
from hvc.propagation import PropagationConfig

# --------------------------------------------------------------------------- a fake JHMDB tree


def _pos_img(T: int, seed: int) -> np.ndarray:
    """2 x 15 x T 1-based MATLAB pixel coordinates."""
    return np.random.default_rng(seed).uniform(1, 30, (2, 15, T))


def _add_video(root: Path, action: str, video: str, n_frames: int, mat_frames: int | None = None) -> np.ndarray:
    """PNG frames 00001.png.. and joint_positions.mat; returns the frames written."""
    folder = root / "Rename_Images" / action / video
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n_frames)
    frames = rng.integers(0, 256, (n_frames, 24, 32, 3), dtype=np.uint8)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    mat = root / "joint_positions" / action / video / "joint_positions.mat"
    mat.parent.mkdir(parents=True)
    T = n_frames if mat_frames is None else mat_frames
    scipy.io.savemat(mat, {"pos_img": _pos_img(T, seed=len(video)), "scale": np.ones((1, T)), "viewpoint": "E"})
    return frames


def _fake_jhmdb(root: Path) -> dict[str, np.ndarray]:
    """Two actions; split 1 marks brush_hair/b_test and catch/c_test as test (2)."""
    frames = {
        "brush_hair/b_test": _add_video(root, "brush_hair", "b_test", 3),
        "brush_hair/b_train": _add_video(root, "brush_hair", "b_train", 2),
        "catch/c_test": _add_video(root, "catch", "c_test", 2),
    }
    (root / "splits").mkdir()
    (root / "splits" / "brush_hair_test_split1.txt").write_text("b_test.avi 2\nb_train.avi 1\n")
    (root / "splits" / "catch_test_split1.txt").write_text("c_test.avi 2 \n\n")
    (root / "splits" / "catch_test_split2.txt").write_text("c_test.avi 1\n")  # other splits are ignored
    return frames


def test_read_jhmdb_reads_the_split1_test_videos(tmp_path):
    written = _fake_jhmdb(tmp_path)
    videos = read_jhmdb(tmp_path)
    assert [v.name for v in videos] == ["brush_hair/b_test", "catch/c_test"]
    b = videos[0]
    assert [p.name for p in b.frames] == ["00001.png", "00002.png", "00003.png"]
    assert b.joints.shape == (3, 15, 2)
    pos = scipy.io.loadmat(tmp_path / "joint_positions/brush_hair/b_test/joint_positions.mat")["pos_img"]
    np.testing.assert_allclose(b.joints[2, 7], pos[:, 7, 2] - 1)  # (x, y), 0-based
    frames = b.read_frames()  # PNG through the project's one image reader
    assert all(f.dtype == np.uint8 and f.shape == (24, 32, 3) for f in frames)
    np.testing.assert_array_equal(np.stack(frames), written["brush_hair/b_test"])


def test_read_jhmdb_with_a_video_list(tmp_path):
    _fake_jhmdb(tmp_path)
    listing = tmp_path / "mine.txt"
    listing.write_text("catch/c_test\nbrush_hair/b_train\n")
    assert [v.name for v in read_jhmdb(tmp_path, listing)] == ["catch/c_test", "brush_hair/b_train"]


def _break(root: Path, problem: str) -> tuple[Path, str]:
    """Damage the fake tree; returns the path the error must name and a phrase of its message."""
    mat = root / "joint_positions/brush_hair/b_test/joint_positions.mat"
    folder = root / "Rename_Images/brush_hair/b_test"
    if problem == "frame count":
        scipy.io.savemat(mat, {"pos_img": _pos_img(5, 0)})
        return mat, "pos_img has 5 frames but .* holds 3 PNG frames"
    if problem == "missing mat":
        mat.unlink()
        return mat, "joint file not found"
    if problem == "corrupt mat":
        mat.write_bytes(b"not a MATLAB file at all" * 8)
        return mat, "not a readable MATLAB file"
    if problem == "no pos_img":
        scipy.io.savemat(mat, {"scale": np.ones((1, 3))})
        return mat, "no 'pos_img'"
    if problem == "wrong shape":
        scipy.io.savemat(mat, {"pos_img": np.ones((2, 14, 3))})
        return mat, r"shape \(2, 14, 3\)"
    if problem == "missing folder":
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        return folder, "frame folder not found"
    if problem == "frame gap":
        (folder / "00002.png").unlink()
        return folder, r"not numbered 1..2 \(missing \[2\]"
    if problem == "bad split line":
        split = root / "splits/catch_test_split1.txt"
        split.write_text("c_test.avi test\n")
        return split, "line 1: expected '<video>.avi <1|2>'"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem",
    [
        "frame count",
        "missing mat",
        "corrupt mat",
        "no pos_img",
        "wrong shape",
        "missing folder",
        "frame gap",
        "bad split line",
    ],
)
def test_read_jhmdb_errors_name_the_file(tmp_path, problem):
    _fake_jhmdb(tmp_path)
    path, message = _break(tmp_path, problem)
    with pytest.raises(DataError, match=message) as info:
        read_jhmdb(tmp_path)
    assert Path(info.value.path) == path


def test_read_jhmdb_without_splits_or_list(tmp_path):
    with pytest.raises(DataError, match="folder not found") as info:
        read_jhmdb(tmp_path)
    assert Path(info.value.path) == tmp_path / "splits"
    with pytest.raises(DataError, match="split file not found"):
        read_jhmdb(tmp_path, tmp_path / "absent.txt")


# --------------------------------------------------------------------------- heatmaps and readout


def test_heatmap_is_a_unit_peak_gaussian_on_the_nearest_cell():
    maps = joints_to_heatmaps(np.array([[43.0, 21.0], [1000.0, 5.0]]), (10, 12), stride=8.0)
    assert maps.shape == (2, 10, 12)
    m = maps[0]  # joint at cell (5.375, 2.625): nearest cell x=5, y=3
    assert m[3, 5] == 1.0
    assert m.flatten().argmax().item() == 3 * 12 + 5
    assert m[3, 4].item() == pytest.approx(np.exp(-2.0))  # one cell away, sigma 0.5
    assert m[2, 6].item() == pytest.approx(np.exp(-4.0))
    assert m[3, 7].item() == 0.0 and m[5, 5].item() == 0.0  # beyond 3 sigma
    assert maps[1].sum() == 0  # a joint far off the map leaves no mass


def test_top3_readout_recovers_joints_within_a_fraction_of_a_cell():
    rng = np.random.default_rng(0)
    joints = rng.uniform(16, 300, (200, 2))  # input pixels of a 320 x 320 frame, off the border
    cells = heatmaps_to_joints(joints_to_heatmaps(joints, (40, 40), stride=8.0))
    assert cells.shape == (200, 2)
    # the nearest cell, pulled by at most exp(-2) / (1 + 2 exp(-2)) by the two neighbours
    # of the peak that make the top 3
    tie = np.exp(-2) / (1 + 2 * np.exp(-2))
    assert np.abs(cells - np.floor(joints / 8 + 0.5)).max() <= tie + 1e-4
    assert np.abs(cells - joints / 8).max() <= 0.5 + tie + 1e-4


def test_readout_weights_the_three_largest_cells():
    maps = np.zeros((2, 6, 7), np.float32)
    maps[0, 3, 2], maps[0, 3, 4], maps[0, 5, 2], maps[0, 0, 0] = 0.5, 0.3, 0.2, 0.1  # last one not in the top 3
    xy = heatmaps_to_joints(torch.from_numpy(maps))
    expected = [2 * 0.5 + 4 * 0.3 + 2 * 0.2, 3 * 0.5 + 3 * 0.3 + 5 * 0.2]  # weights already sum to 1
    np.testing.assert_allclose(xy[0], expected, atol=1e-6)
    assert np.isnan(xy[1]).all()  # no mass, no prediction


# --------------------------------------------------------------------------- PCK

# ground truth of every frame: box 30 x 40, diagonal 50, reference 0.6 * 50 = 30 px
GT = np.array([[10.0, 10.0], [40.0, 10.0], [10.0, 50.0]])


def test_pck_counts_against_hand_built_distances():
    gt = np.stack([GT] * 3)
    pred = gt.copy()
    pred[0] += 100.0  # frame 0 is given, never scored
    pred[1, 0] += [3.0, 0.0]  # 3 px = 0.1 x 30: correct at both (inclusive)
    pred[1, 1] += [3.0, 4.0]  # 5 px: correct at 0.2 only
    pred[1, 2] += [7.0, 0.0]  # 7 px > 6 px: wrong at both
    pred[2, 1] = np.nan  # no prediction: not scored, and left out of the box...
    pred[2, 2] += [0.0, 4.0]  # ... so the box is 0 x 40: reference 24 px, 4 px correct at 0.2 only
    correct, scored = pck(pred, gt)
    np.testing.assert_array_equal(scored, [2, 1, 2])
    np.testing.assert_array_equal(correct[0.1], [2, 0, 0])
    np.testing.assert_array_equal(correct[0.2], [2, 1, 1])


def test_evaluate_pose_averages_per_joint_fractions_over_videos():
    gt_a = np.stack([GT] * 3)
    pred_a = gt_a.copy()
    pred_a[1] += [[3.0, 0.0], [3.0, 4.0], [7.0, 0.0]]
    pred_a[2, 1] = np.nan
    pred_a[2, 2] += [0.0, 4.0]
    gt_b = np.stack([GT] * 2)
    pred_b = gt_b.copy()  # exact in its one scored frame
    videos = [PoseVideo("a/x", [], gt_a), PoseVideo("b/y", [], gt_b)]
    result = evaluate_pose(videos, {"a/x": pred_a, "b/y": pred_b})
    # correct@0.1 per joint [3, 1, 1], correct@0.2 [3, 2, 2], scored [3, 2, 3]
    assert result["PCK@0.1"] == pytest.approx((3 / 3 + 1 / 2 + 1 / 3) / 3)
    assert result["PCK@0.2"] == pytest.approx((3 / 3 + 2 / 2 + 2 / 3) / 3)
    assert result["videos"] == 2 and result["joints_scored"] == 8
    with pytest.raises(ValueError, match="no prediction for video 'b/y'"):
        evaluate_pose(videos, {"a/x": pred_a})


# --------------------------------------------------------------------------- predictions on disk


def test_pose_files_round_trip_and_bad_files_are_named(tmp_path):
    joints = np.random.default_rng(0).uniform(0, 300, (4, 15, 2))
    joints[2, 3] = np.nan
    path = tmp_path / "out" / "brush_hair" / "v.json"
    write_pose(path, joints)
    np.testing.assert_array_equal(read_pose(path), joints)  # NaN stored as null, read back as NaN
    with pytest.raises(DataError, match="not found") as info:
        read_pose(tmp_path / "absent.json")
    assert Path(info.value.path) == tmp_path / "absent.json"
    bad = tmp_path / "bad.json"
    cases = [
        ("{", "not valid JSON"),
        ('{"joints": [[["a", 2]]]}', "not \\[x, y\\] numbers"),
        ('{"joints": [[1, 2]]}', "shape \\(1, 2\\)"),
        ("[]", "expected"),
    ]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(DataError, match=message) as info:
            read_pose(bad)
        assert Path(info.value.path) == bad


# --------------------------------------------------------------------------- a known motion


def _periodic_texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random colours that wrap around, so a rolled frame has no new content."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((h, w, 3)), sigma=(2, 2, 0), mode="wrap")
    return (255 * (img - img.min()) / (img.max() - img.min())).astype(np.uint8)


def _patches(x, layer):
    """Identity-like encoder, stride 8: each cell's feature is its centred 8 x 8 RGB patch."""
    n, _, h, w = x.shape
    f = F.unfold(x, 8, stride=8).view(n, -1, h // 8, w // 8)
    return f - f.mean(1, keepdim=True)


def test_known_translation_moves_the_joints():
    H, W, T = 120, 160, 5  # resized to 160 x 160: x kept, y stretched by 4/3
    motion = np.array([8.0, 6.0])  # px per frame in the original frame: one feature cell each way
    base = _periodic_texture(H, W, 0)
    frames = [np.roll(base, (k * int(motion[1]), k * int(motion[0])), axis=(0, 1)) for k in range(T)]
    joints0 = np.array([[40, 30], [80.3, 60.7], [110, 70], [55.5, 74.2], [100, 33.3], [20, 20], [3, 70]], float)
    cfg = PropagationConfig(temperature=0.02, topk=5, context=2, radius=4)
    out = propagate_pose(_patches, frames, joints0, cfg, size=160)
    assert out.shape == (T, len(joints0), 2)
    np.testing.assert_array_equal(out[0], joints0)
    cell = np.array([8.0, 6.0])  # one feature cell in original pixels (x, y)
    to_input = np.array([160 / W, 160 / H])
    # frame 0's own readout (joints snapped to the nearest cell) moved by the known motion
    start = heatmaps_to_joints(joints_to_heatmaps(joints0 * to_input, (20, 20), 8.0)) * 8.0 / to_input
    steps = np.arange(1, T)[:, None, None]
    tie = np.exp(-2) / (1 + 2 * np.exp(-2))  # the readout's pull towards 2 of the peak's 4 neighbours
    assert (np.abs(out[1:] - (start + steps * motion)) / cell).max() <= 2 * tie + 1e-3
    assert (np.abs(out[1:] - (joints0 + steps * motion)) / cell).max() <= 0.5 + 2 * tie + 1e-3


def test_propagate_pose_checks_its_inputs():
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match="joints0 must be"):
        propagate_pose(_patches, frames, np.zeros(4), PropagationConfig(), size=16)
    with pytest.raises(ValueError, match="differ in size"):
        uneven = [frames[0], np.zeros((8, 16, 3), np.uint8)]
        propagate_pose(_patches, uneven, np.zeros((1, 2)), PropagationConfig(), size=16)
