"""Tests of hvc.eval.metrics against hand-computed values, an independent re-derivation of the
DAVIS toolkit's definitions (morphological dilation with skimage's disk) and real DAVIS 2016
masks."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk

from hvc.io import DataError, write_mask
from hvc.eval.metrics import (
    evaluate_folder,
    evaluate_sequence,
    f_measure,
    jaccard,
    seg2bmap,
    statistics,
    summarize,
)

# --------------------------------------------------------------------------- independent reference


def reference_boundary(mask: np.ndarray) -> np.ndarray:
    """The seg2bmap rule restated: compare each pixel with its E, S and SE neighbours,
    the image extended by repeating its last row and column (so the last row compares
    with E only, the last column with S only, the corner with nothing)."""
    p = np.pad(mask.astype(bool), ((0, 1), (0, 1)), mode="edge")
    centre = p[:-1, :-1]
    return (centre != p[:-1, 1:]) | (centre != p[1:, :-1]) | (centre != p[1:, 1:])


def reference_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """F of one (H, W) frame the toolkit's way: dilate each boundary with skimage's disk."""
    gb, pb = reference_boundary(gt), reference_boundary(pred)
    footprint = disk(radius).astype(bool)
    g_dil = ndimage.binary_dilation(gb, footprint)
    p_dil = ndimage.binary_dilation(pb, footprint)
    n_g, n_p = int(gb.sum()), int(pb.sum())
    if n_g == 0 and n_p == 0:
        precision, recall = 1.0, 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = (pb & g_dil).sum() / n_p
        recall = (gb & p_dil).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def reference_j(gt: np.ndarray, pred: np.ndarray) -> float:
    union = int((gt | pred).sum())
    return 1.0 if union == 0 else int((gt & pred).sum()) / union


def reference_statistics(v: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall, decay; the 4 decay bins from edges 1 + i (n - 1) / 4 rounded half up."""
    n = len(v)
    edges = [math.floor(1 + i * (n - 1) / 4 + 0.5) - 1 for i in range(5)]
    first, last = v[edges[0] : edges[1] + 1], v[edges[3] : edges[4] + 1]
    return float(np.nanmean(v)), float(np.sum(v > 0.5) / n), float(np.nanmean(first) - np.nanmean(last))


def square(h: int, w: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


# --------------------------------------------------------------------------- seg2bmap


def test_seg2bmap_of_interior_block_is_outline_shifted_towards_origin():
    seg = np.zeros((5, 5), dtype=np.uint8)
    seg[1:3, 1:3] = 7  # any nonzero value is foreground
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    out = seg2bmap(seg)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)


def test_seg2bmap_last_column_and_full_mask():
    seg = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]])
    expected = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    # a mask covering the whole image has no boundary at all
    assert not seg2bmap(np.ones((3, 3))).any()
    assert not seg2bmap(np.zeros((4, 6))).any()


def test_seg2bmap_square_boundary_has_4s_pixels_and_stacks_frame_by_frame():
    a = square(30, 40, 5, 7, 10)
    b = square(30, 40, 12, 20, 6)
    assert seg2bmap(a).sum() == 40
    stacked = seg2bmap(np.stack([a, b]))
    np.testing.assert_array_equal(stacked[0], seg2bmap(a))
    np.testing.assert_array_equal(stacked[1], seg2bmap(b))


def test_seg2bmap_rescale_follows_martins_rule():
    seg = np.zeros((6, 6), dtype=bool)
    seg[3:5, 3:5] = True  # boundary: outline of rows 2..4, cols 2..4
    # boundary pixels (y, x) land on (y * 3 // 6, x * 3 // 6)
    expected = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]], dtype=bool)
    out = seg2bmap(seg, width=3, height=3)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="cannot convert"):
        seg2bmap(seg, width=8, height=8)
    with pytest.raises(ValueError, match="cannot convert"):
        seg2bmap(seg, width=4, height=2)


# --------------------------------------------------------------------------- J and F by hand


def test_two_squares_with_known_overlap():
    gt = square(20, 20, 0, 0, 10)[None]
    pred = square(20, 20, 5, 5, 10)[None]
    # intersection 5 x 5 = 25, union 100 + 100 - 25 = 175
    assert jaccard(gt, pred)[0] == 25 / 175


def test_mask_against_itself_and_empty_conventions():
    m = square(30, 30, 4, 6, 12)[None]
    empty = np.zeros_like(m)
    assert jaccard(m, m)[0] == 1.0 and f_measure(m, m)[0] == 1.0
    assert jaccard(empty, empty)[0] == 1.0 and f_measure(empty, empty)[0] == 1.0
    assert jaccard(m, empty)[0] == 0.0 and f_measure(m, empty)[0] == 0.0
    assert jaccard(empty, m)[0] == 0.0 and f_measure(empty, m)[0] == 0.0


def test_one_pixel_shift_is_within_the_boundary_tolerance():
    # 854x480: tolerance ceil(0.008 * 979.6) = 8 px
    gt = square(480, 854, 100, 100, 100)[None]
    pred = square(480, 854, 100, 101, 100)[None]
    assert jaccard(gt, pred)[0] == 99 / 101  # 100 * 99 over 100 * 101
    assert f_measure(gt, pred)[0] == 1.0


def shifted_square_f(side: int, shift: int, radius: int) -> float:
    """F of a square against itself shifted sideways by r < shift < side - r.

    Each boundary is the outline of a (side+1)^2 box, 4*side pixels. Of the shifted
    outline, the top and bottom rows have side + r - shift + 1 pixels each within r of
    the other outline, the column inside the other box 2r (r near each end), the far
    column none. By symmetry precision = recall.
    """
    matched = 2 * (side + radius - shift + 1) + 2 * radius
    return matched / (4 * side)


def test_shift_beyond_tolerance_default_threshold():
    gt = square(480, 854, 100, 100, 100)[None]
    pred = square(480, 854, 100, 120, 100)[None]  # 20 px > 8 px
    assert jaccard(gt, pred)[0] == 80 / 120
    assert shifted_square_f(100, 20, 8) == 194 / 400
    assert f_measure(gt, pred)[0] == pytest.approx(194 / 400, abs=1e-15)
    assert f_measure(pred, gt)[0] == pytest.approx(194 / 400, abs=1e-15)


def test_shift_beyond_tolerance_radius_in_pixels():
    gt = square(40, 60, 10, 10, 20)[None]
    pred = square(40, 60, 10, 14, 20)[None]  # 4 px > 2 px
    assert shifted_square_f(20, 4, 2) == 42 / 80
    assert f_measure(gt, pred, bound_th=2)[0] == pytest.approx(42 / 80, abs=1e-15)
    assert f_measure(gt, pred, bound_th=4)[0] == 1.0  # now within tolerance


def test_boundary_tolerance_radius():
    gt = square(480, 854, 100, 100, 100)[None]
    # 8 px at 854x480: a shift of 8 is fully tolerated, a shift of 9 is not
    assert f_measure(gt, square(480, 854, 100, 108, 100)[None])[0] == 1.0
    assert f_measure(gt, square(480, 854, 100, 109, 100)[None])[0] < 1.0


def test_bad_inputs_raise():
    a = np.zeros((2, 5, 5), dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        jaccard(a, a[:1])
    with pytest.raises(ValueError, match="shape"):
        f_measure(a[0], a[0])
    with pytest.raises(ValueError, match="bound_th"):
        f_measure(a, a, bound_th=0)
    with pytest.raises(ValueError, match="whole"):
        f_measure(a, a, bound_th=2.5)


@pytest.mark.parametrize("radius", range(1, 13))
def test_distance_disk_is_skimage_disk(radius):
    # f_measure's "within distance r" is the toolkit's skimage.morphology.disk(r)
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    np.testing.assert_array_equal(dy**2 + dx**2 <= radius**2, disk(radius).astype(bool))


# --------------------------------------------------------------------------- hypothesis


@st.composite
def mask_pairs(draw, max_t=3, max_side=14):
    t = draw(st.integers(1, max_t))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    a = draw(arrays(bool, (t, h, w)))
    b = draw(arrays(bool, (t, h, w)))
    return a, b


@settings(max_examples=150, deadline=None)
@given(mask_pairs())
def test_j_and_f_are_fractions_symmetric_and_one_on_identity(pair):
    a, b = pair
    j, f = jaccard(a, b), f_measure(a, b)
    assert j.shape == f.shape == (len(a),)
    assert ((0 <= j) & (j <= 1)).all() and ((0 <= f) & (f <= 1)).all()
    np.testing.assert_array_equal(j, jaccard(b, a))
    np.testing.assert_array_equal(f, f_measure(b, a))
    np.testing.assert_array_equal(jaccard(a, a), 1.0)
    np.testing.assert_array_equal(f_measure(a, a), 1.0)


@settings(max_examples=150, deadline=None)
@given(mask_pairs(max_t=1, max_side=30), st.sampled_from([0.008, 0.05, 0.1, 1, 2, 3]))
def test_f_equals_dilation_with_skimage_disk(pair, bound_th):
    a, b = pair
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*a.shape[1:]))
    assert f_measure(a, b, bound_th)[0] == pytest.approx(reference_f(a[0], b[0], radius), abs=1e-15)
    assert jaccard(a, b)[0] == reference_j(a[0], b[0])


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 3)))
def test_seg2bmap_equals_padding_rule(seg):
    np.testing.assert_array_equal(seg2bmap(seg), reference_boundary(seg > 0))


# --------------------------------------------------------------------------- statistics


def test_statistics_by_hand():
    v = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    # n = 8: bin edges 1, 2.75, 4.5, 6.25, 8 -> frames 0..2 and 5..7; 0.5 is not > 0.5
    mean, recall, decay = statistics(v)
    assert mean == pytest.approx(0.65)
    assert recall == 5 / 8
    assert decay == pytest.approx(0.9 - 0.4)


def test_statistics_decay_rounds_half_up():
    # n = 7: edges 1, 2.5, 4, 5.5, 7 -> first bin frames 0..2 (2.5 rounds up), last 5..6
    v = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert statistics(v)[2] == pytest.approx(2 / 3)


def test_statistics_nan_handling():
    mean, recall, decay = statistics(np.array([1.0, np.nan, 0.2, 0.8]))
    assert mean == pytest.approx(2 / 3)  # NaN ignored
    assert recall == 0.5  # the NaN frame counts as not recalled: 2 of 4
    assert decay == pytest.approx(1.0 - 0.5)  # bins [1, nan] and [0.2, 0.8]
    mean, recall, decay = statistics(np.array([np.nan, np.nan, np.nan]))
    assert math.isnan(mean) and recall == 0.0 and math.isnan(decay)


def test_statistics_short_and_empty():
    assert statistics(np.array([0.7])) == (0.7, 1.0, 0.0)
    assert statistics(np.array([0.9, 0.2])) == pytest.approx((0.55, 0.5, 0.7))
    assert all(math.isnan(x) for x in statistics(np.array([])))
    with pytest.raises(ValueError, match="1-D"):
        statistics(np.zeros((2, 2)))


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 120), elements=st.floats(0, 1)))
def test_statistics_matches_reference(v):
    got = statistics(v)
    assert got == pytest.approx(reference_statistics(v), abs=1e-12)
    assert 0 <= got[0] <= 1 and 0 <= got[1] <= 1


# --------------------------------------------------------------------------- protocol


def labels(*objects: np.ndarray) -> np.ndarray:
    out = np.zeros(objects[0].shape, dtype=np.uint8)
    for k, m in enumerate(objects, start=1):
        out[m] = k
    return out


def test_evaluate_sequence_multi_object_skips_first_and_last_frames():
    a, b = square(20, 20, 1, 1, 6), square(20, 20, 10, 10, 8)
    gt = np.stack([labels(a, b)] * 4)
    pred = gt.copy()
    pred[0] = 2  # first and last frames are not scored (nor checked)
    pred[3] = 9
    pred[2][b] = 0  # object 2 lost in the third frame (second scored one)
    scores = evaluate_sequence(gt, pred)
    assert list(scores) == [1, 2]
    np.testing.assert_array_equal(scores[1]["J"], [1.0, 1.0])
    np.testing.assert_array_equal(scores[1]["F"], [1.0, 1.0])
    np.testing.assert_array_equal(scores[2]["J"], [1.0, 0.0])
    np.testing.assert_array_equal(scores[2]["F"], [1.0, 0.0])


def test_evaluate_sequence_objects_and_void():
    a, b = square(20, 20, 1, 1, 6), square(20, 20, 10, 10, 8)
    gt = np.stack([labels(a), labels(a, b), labels(a, b)])
    # objects come from the first ground-truth frame: object 2 is not scored ...
    assert list(evaluate_sequence(gt, np.where(gt == 2, 0, gt))) == [1]
    # ... and predicting it is an error (as in the toolkit)
    with pytest.raises(ValueError, match="label 2"):
        evaluate_sequence(gt, gt)
    # an explicit count scores it (and an object absent everywhere scores 1)
    assert list(evaluate_sequence(gt, gt, num_objects=3)) == [1, 2, 3]
    assert evaluate_sequence(gt, gt, num_objects=3)[3]["J"][0] == 1.0
    # void (255) in the ground truth is background
    gt_void = gt.copy()
    gt_void[1][15:, :5] = 255
    scores = evaluate_sequence(gt_void, gt, num_objects=2)
    assert scores[1]["J"][0] == 1.0 and scores[2]["J"][0] == 1.0


def test_evaluate_sequence_errors():
    gt = np.zeros((3, 8, 8), dtype=np.uint8)
    gt[:, 2:5, 2:5] = 1
    with pytest.raises(ValueError, match="shape"):
        evaluate_sequence(gt, gt[:, :4])
    with pytest.raises(ValueError, match="at least 3 frames"):
        evaluate_sequence(gt[:2], gt[:2])
    pred = gt.copy()
    pred[1, 0, 0] = 3
    with pytest.raises(ValueError, match="label 3 in frame 1 .* only 1 object"):
        evaluate_sequence(gt, pred)


def test_summarize_pools_objects_not_sequences():
    per_object = {
        "a_1": {"J": np.ones(4), "F": np.full(4, 0.5)},
        "a_2": {"J": np.zeros(4), "F": np.zeros(4)},
        "b_1": {"J": np.ones(4), "F": np.ones(4)},
    }
    table = summarize(per_object)
    assert table["J_mean"] == pytest.approx(2 / 3)  # not the sequence mean (0.5 + 1) / 2
    assert table["F_mean"] == pytest.approx(0.5)
    assert table["JF_mean"] == pytest.approx(7 / 12)
    assert table["J_recall"] == pytest.approx(2 / 3) and table["F_recall"] == pytest.approx(1 / 3)
    assert table["J_decay"] == 0.0 and table["F_decay"] == 0.0
    assert list(table["per_object"]) == ["a_1", "a_2", "b_1"]
    assert table["per_object"]["a_1"]["F_mean"] == 0.5
    assert all(type(v) is float for k, v in table.items() if k != "per_object")


def test_summarize_nan_quirk_and_errors():
    table = summarize(
        {"a_1": {"J": np.full(3, np.nan), "F": np.full(3, np.nan)}, "b_1": {"J": np.ones(3), "F": np.ones(3)}}
    )
    assert table["J_mean"] == 1.0  # the toolkit skips NaN objects for J ...
    assert math.isnan(table["F_mean"])  # ... but not for F
    with pytest.raises(ValueError, match="no objects"):
        summarize({})
    with pytest.raises(ValueError, match="'J' and 'F'"):
        summarize({"a_1": {"J": np.ones(3)}})


# --------------------------------------------------------------------------- evaluate_folder


@pytest.fixture
def tiny_davis(tmp_path: Path) -> tuple[Path, Path]:
    """A 4-frame DAVIS 2016-style sequence 's' (0/255 greyscale masks) and its prediction."""
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    (gt_root / "s").mkdir(parents=True)
    for i in range(4):
        m = square(24, 32, 4 + i, 6, 10)
        Image.fromarray(m.astype(np.uint8) * 255).save(gt_root / "s" / f"{i:05d}.png")
        write_mask(pred_root / "s" / f"{i:05d}.png", m.astype(np.uint8))
    return gt_root, pred_root


def test_evaluate_folder_reads_greyscale_gt_and_palette_predictions(tiny_davis):
    gt_root, pred_root = tiny_davis
    table = evaluate_folder(gt_root, pred_root, ["s"])
    assert table["JF_mean"] == 1.0
    assert list(table["per_object"]) == ["s_1"]
    write_mask(pred_root / "s" / "00001.png", np.zeros((24, 32), np.uint8))
    table = evaluate_folder(gt_root, pred_root, ["s"])
    assert table["J_mean"] == 0.5 and table["F_mean"] == 0.5


def test_evaluate_folder_counts_the_scored_frames_with_a_predicted_foreground(tiny_davis):
    """A degenerate (all-background) prediction is told apart from a result: the first and
    last frames are not scored, so foreground there does not count."""
    gt_root, pred_root = tiny_davis
    table = evaluate_folder(gt_root, pred_root, ["s"])
    assert (table["scored_frames"], table["foreground_frames"]) == (2, 2)
    write_mask(pred_root / "s" / "00001.png", np.zeros((24, 32), np.uint8))
    assert evaluate_folder(gt_root, pred_root, ["s"])["foreground_frames"] == 1
    write_mask(pred_root / "s" / "00002.png", np.zeros((24, 32), np.uint8))
    table = evaluate_folder(gt_root, pred_root, ["s"])
    assert (table["scored_frames"], table["foreground_frames"], table["JF_mean"]) == (2, 0, 0.0)


def test_evaluate_folder_missing_prediction(tiny_davis):
    gt_root, pred_root = tiny_davis
    (pred_root / "s" / "00002.png").unlink()
    with pytest.raises(DataError, match="missing prediction") as e:
        evaluate_folder(gt_root, pred_root, ["s"])
    assert e.value.path == str(pred_root / "s" / "00002.png")
    with pytest.raises(DataError, match="not found"):
        evaluate_folder(gt_root, pred_root / "nowhere", ["s"])
    with pytest.raises(DataError, match="no ground-truth"):
        evaluate_folder(gt_root, pred_root, ["t"])


def test_evaluate_folder_frame_count_mismatch(tiny_davis):
    gt_root, pred_root = tiny_davis
    write_mask(pred_root / "s" / "00004.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(DataError, match="5 predicted frames but 4 ground-truth") as e:
        evaluate_folder(gt_root, pred_root, ["s"])
    assert e.value.path == str(pred_root / "s" / "00004.png")


def test_evaluate_folder_size_mismatch(tiny_davis):
    gt_root, pred_root = tiny_davis
    write_mask(pred_root / "s" / "00001.png", np.zeros((24, 30), np.uint8))
    with pytest.raises(DataError, match="30x24 but the ground truth") as e:
        evaluate_folder(gt_root, pred_root, ["s"])
    assert e.value.path == str(pred_root / "s" / "00001.png")


def test_evaluate_folder_too_many_objects(tiny_davis):
    gt_root, pred_root = tiny_davis
    write_mask(pred_root / "s" / "00001.png", np.full((24, 32), 2, np.uint8))
    with pytest.raises(DataError, match="label 2") as e:
        evaluate_folder(gt_root, pred_root, ["s"])
    assert e.value.path == str(pred_root / "s")


# --------------------------------------------------------------------------- real DAVIS 2016 data


def val_sequences(root: Path) -> list[str]:
    """Sequence names of ImageSets/480p/val.txt, whose lines read
    '/JPEGImages/480p/<seq>/<frame>.jpg /Annotations/480p/<seq>/<frame>.png'."""
    names: list[str] = []
    for line in (root / "ImageSets/480p/val.txt").read_text().splitlines():
        if line.strip():
            seq = Path(line.split()[1]).parts[-2]
            if seq not in names:
                names.append(seq)
    return names


def test_real_ground_truth_as_prediction_scores_exactly_one(davis2016_sample):
    sequences = val_sequences(davis2016_sample)
    assert sequences == ["blackswan", "car-shadow", "dog", "libby", "kite-surf", "scooter-black"]
    annotations = davis2016_sample / "Annotations/480p"
    table = evaluate_folder(annotations, annotations, sequences)
    assert table["JF_mean"] == 1.0
    assert table["J_mean"] == table["F_mean"] == table["J_recall"] == table["F_recall"] == 1.0
    assert table["J_decay"] == table["F_decay"] == 0.0
    assert list(table["per_object"]) == [f"{s}_1" for s in sequences]


def shift_right(m: np.ndarray, px: int) -> np.ndarray:
    out = np.zeros_like(m)
    out[:, px:] = m[:, :-px]
    return out


DEGRADATIONS = {
    "shift_20px": ("blackswan", lambda m: shift_right(m, 20)),
    "eroded": ("dog", lambda m: ndimage.binary_erosion(m, iterations=6)),
    "dilated": ("kite-surf", lambda m: ndimage.binary_dilation(m, iterations=6)),
}


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_real_degraded_prediction_matches_direct_computation(davis2016_sample, tmp_path, name):
    seq, degrade = DEGRADATIONS[name]
    source = davis2016_sample / "Annotations/480p" / seq
    frames = sorted(source.glob("*.png"))[::6]  # every 6th frame keeps the test fast
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    (gt_root / seq).mkdir(parents=True)
    gt_masks, pred_masks = [], []
    for f in frames:
        shutil.copy(f, gt_root / seq / f.name)
        raw = np.asarray(Image.open(f))
        assert set(np.unique(raw).tolist()) <= {0, 255}
        gt = raw == 255
        pred = degrade(gt)
        write_mask(pred_root / seq / f.name, pred.astype(np.uint8))
        gt_masks.append(gt)
        pred_masks.append(pred)

    table = evaluate_folder(gt_root, pred_root, [seq])

    # the definition, computed directly on the scored frames (first and last dropped)
    radius = 8  # ceil(0.008 * sqrt(480^2 + 854^2)), DAVIS toolkit bound_th
    assert gt_masks[0].shape == (480, 854)
    scored = list(zip(gt_masks, pred_masks))[1:-1]
    j = np.array([reference_j(g, p) for g, p in scored])
    f = np.array([reference_f(g, p, radius) for g, p in scored])
    j_stats, f_stats = reference_statistics(j), reference_statistics(f)
    keys = ["J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay"]
    expected = dict(zip(keys, j_stats + f_stats))
    for key, value in expected.items():
        assert table[key] == pytest.approx(value, abs=1e-12), key
    assert table["JF_mean"] == pytest.approx((j_stats[0] + f_stats[0]) / 2, abs=1e-12)
    assert table["J_mean"] < 1.0 and table["F_mean"] < 1.0 and table["JF_mean"] < 1.0
