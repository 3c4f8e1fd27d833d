"""VIP part propagation: the layout reader, the mIoU protocol, propagation at a fixed square size."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from hvc.eval.video import Video
from hvc.io import DataError, read_mask, write_mask
from hvc.methods.hvc.model import build_encoder_for_propagation
from hvc.eval.parts import evaluate_parts, propagate_parts, read_vip, vip_folder
from hvc.propagation import PropagationConfig

STEMS = ["000000000001", "000000000026", "000000000051"]  # VIP_Fine keeps one frame in 25


def _fake_vip(root: Path, videos: dict[str, list[np.ndarray]], greyscale: set[str] = frozenset()) -> Path:
    """root/VIP_Fine with Images, Annotations/Category_ids and lists/val_videos.txt."""
    base = root / "VIP_Fine"
    for name, masks in videos.items():
        (base / "Images" / name).mkdir(parents=True)
        (base / "Annotations" / "Category_ids" / name).mkdir(parents=True)
        for stem, mask in zip(STEMS, masks):
            frame = np.full((*mask.shape, 3), 40 * (1 + STEMS.index(stem)), np.uint8)
            Image.fromarray(frame).save(base / "Images" / name / f"{stem}.jpg")
            png = base / "Annotations" / "Category_ids" / name / f"{stem}.png"
            if name in greyscale:
                Image.fromarray(mask, mode="L").save(png)
            else:
                write_mask(png, mask)
    (base / "lists").mkdir()
    (base / "lists" / "val_videos.txt").write_text("videos7\nImages/videos12\n")  # a path's last part is the name
    return base


def _masks(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 20, (12, 16)).astype(np.uint8) for _ in STEMS]


def test_read_vip_reads_the_layout(tmp_path):
    truth = {"videos7": _masks(0), "videos12": _masks(1)}
    base = _fake_vip(tmp_path, truth, greyscale={"videos12"})
    videos = read_vip(tmp_path)
    assert [v.name for v in videos] == ["videos7", "videos12"]
    for v in videos:
        assert [p.name for p in v.frames] == [f"{s}.jpg" for s in STEMS]
        assert sorted(v.masks) == [0, 1, 2]
        for t, m in enumerate(truth[v.name]):
            np.testing.assert_array_equal(read_mask(v.masks[t], v.greyscale_labels), m)  # palette and greyscale part ids
    # VIP_Fine itself is accepted as the root
    assert vip_folder(base) == vip_folder(tmp_path) == base
    assert [v.frames for v in read_vip(base)] == [v.frames for v in videos]


def test_read_vip_names_the_bad_file(tmp_path):
    with pytest.raises(DataError) as e:
        read_vip(tmp_path)
    assert e.value.path == str(tmp_path / "VIP_Fine/lists/val_videos.txt")

    base = _fake_vip(tmp_path, {"videos7": _masks(0)})  # the list also names videos12
    with pytest.raises(DataError) as e:
        read_vip(tmp_path)
    assert e.value.path == str(base / "lists/val_videos.txt")
    assert "videos12" in str(e.value) and str(base / "Images/videos12") in str(e.value)

    (base / "lists/val_videos.txt").write_text("videos7\n")
    stray = base / "Annotations/Category_ids/videos7/000000000076.png"
    write_mask(stray, _masks(2)[0])
    with pytest.raises(DataError) as e:
        read_vip(tmp_path)
    assert e.value.path == str(stray) and "no frame" in str(e.value)

    stray.unlink()
    first = base / "Annotations/Category_ids/videos7" / f"{STEMS[0]}.png"
    first.unlink()
    with pytest.raises(DataError) as e:
        read_vip(tmp_path)
    assert e.value.path == str(first)


def _write_case(tmp_path: Path, gts: dict[str, list[np.ndarray]], preds: dict[str, list[np.ndarray]]) -> list[Video]:
    videos = []
    for name, maps in gts.items():
        frames = [tmp_path / "img" / name / f"{s}.jpg" for s in STEMS[: len(maps)]]
        masks = {}
        for t, m in enumerate(maps):
            masks[t] = tmp_path / "gt" / name / f"{STEMS[t]}.png"
            write_mask(masks[t], m)
            write_mask(tmp_path / "pred" / name / f"{STEMS[t]}.png", preds[name][t])
        videos.append(Video(name, frames, masks))
    return videos


def test_miou_from_one_confusion_over_all_frames(tmp_path):
    # Classes 0, 1, 2 and 5 occur; 3, 4 and 6..19 occur nowhere; 255 is void.
    gt_a0 = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    pr_a0 = gt_a0.copy()  # frame 0: the given annotation
    gt_a1 = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    pr_a1 = np.array([[0, 1, 1, 1], [2, 0, 3, 5]], np.uint8)  # predictions on void pixels do not count
    gt_b0 = np.array([[5, 5, 0, 0], [5, 5, 0, 0]], np.uint8)
    pr_b0 = gt_b0.copy()
    gt_b1 = np.array([[5, 5, 0, 0], [5, 5, 0, 0]], np.uint8)
    pr_b1 = np.array([[5, 0, 0, 0], [5, 5, 0, 2]], np.uint8)
    videos = _write_case(tmp_path, {"a": [gt_a0, gt_a1], "b": [gt_b0, gt_b1]}, {"a": [pr_a0, pr_a1], "b": [pr_b0, pr_b1]})

    # Frames 1 only (include_first=False), counted by hand (rows ground truth, columns prediction):
    #   class 0: gt a1 {(0,0),(0,1)} + b1 {(0,2),(0,3),(1,2),(1,3)} = 6 px; predicted 0 there on
    #            (0,0), and b1's (0,2),(0,3),(1,2) -> TP 4; predicted 0 elsewhere: a1 (1,1), b1 (0,1) -> +2
    #            IoU_0 = 4 / (6 + 6 - 4) = 4/8
    #   class 1: gt a1 (0,2),(0,3) = 2; pred 1 at a1 (0,1),(0,2),(0,3) -> TP 2, pred 3 -> 2/3
    #   class 2: gt a1 (1,0),(1,1) = 2; pred 2 at a1 (1,0), b1 (1,3) -> TP 1, pred 2 -> 1/3
    #   class 5: gt b1 4 px; pred 5 at (0,0),(1,0),(1,1) -> TP 3, pred 3 -> 3/4
    #   class 3 and 5's void predictions (a1 (1,2),(1,3)) are ignored: 3 has an empty union.
    res = evaluate_parts(videos, tmp_path / "pred", include_first=False)
    expected = {0: 4 / 8, 1: 2 / 3, 2: 1 / 3, 5: 3 / 4}
    assert res["frames"] == 2 and res["videos"] == 2
    assert len(res["IoU_per_class"]) == 20
    for c in range(20):
        if c in expected:
            assert res["IoU_per_class"][c] == pytest.approx(expected[c])
        else:
            assert res["IoU_per_class"][c] is None  # absent from both: left out of the mean
    assert res["mIoU"] == pytest.approx((4 / 8 + 2 / 3 + 1 / 3 + 3 / 4) / 4)

    # Default (UVC/VFS): the first frames are scored too, in the same global matrix.
    # They add 4+4 correct class-0 px, 4 correct class-1 px, 4 correct class-5 px.
    res = evaluate_parts(videos, tmp_path / "pred")
    assert res["frames"] == 4
    assert res["IoU_per_class"][0] == pytest.approx((4 + 8) / (8 + 8))
    assert res["IoU_per_class"][1] == pytest.approx((2 + 4) / (3 + 4))
    assert res["IoU_per_class"][2] == pytest.approx(1 / 3)
    assert res["IoU_per_class"][5] == pytest.approx((3 + 4) / (4 + 4))
    assert res["mIoU"] == pytest.approx((12 / 16 + 6 / 7 + 1 / 3 + 7 / 8) / 4)


def test_evaluate_parts_names_a_missing_or_misfit_prediction(tmp_path):
    gt = np.zeros((4, 6), np.uint8)
    gt[1:3, 1:4] = 2
    videos = _write_case(tmp_path, {"a": [gt, gt]}, {"a": [gt, gt]})
    assert evaluate_parts(videos, tmp_path / "pred")["mIoU"] == 1.0

    missing = tmp_path / "pred/a" / f"{STEMS[1]}.png"
    missing.unlink()
    with pytest.raises(DataError) as e:
        evaluate_parts(videos, tmp_path / "pred")
    assert e.value.path == str(missing)

    write_mask(missing, np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError) as e:
        evaluate_parts(videos, tmp_path / "pred")
    assert e.value.path == str(missing) and "6x5" in str(e.value) and "6x4" in str(e.value)

    write_mask(missing, np.full((4, 6), 21, np.uint8))  # not a VIP part id
    with pytest.raises(DataError) as e:
        evaluate_parts(videos, tmp_path / "pred")
    assert e.value.path == str(missing)


def _textured(h, w, seed):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((h, w, 3)), sigma=(3, 3, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (255 * img).astype(np.uint8)


def test_propagate_parts_tracks_translating_parts():
    # 120x160 frames are squashed to 256x256 (stride-8 features: 32x32 cells of 3.75x5 px);
    # the scene moves right by 10 px = 2 feature cells a frame, part edges lie on cell edges.
    H, W, shift, size = 120, 160, 10, 256
    big = _textured(H, W + 3 * shift, 0)
    frames = [big[:, 2 * shift - k * shift : 2 * shift - k * shift + W] for k in range(3)]
    first = np.zeros((H, W), np.uint8)
    first[30:60, 30:70] = 2  # hair
    first[60:105, 30:70] = 4  # upper-clothes
    first[45:90, 85:120] = 13  # face
    first[0:3, 0:3] = 255  # void: seeded as background
    torch.manual_seed(0)
    enc = build_encoder_for_propagation(None)
    cfg = PropagationConfig(topk=5, context=2, radius=6)
    pred = propagate_parts(lambda x, layer: enc(x, layer), frames, first, cfg, size=size)
    assert pred.shape == (3, H, W) and pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 2, 4, 13}  # only the first frame's parts, no void channel
    np.testing.assert_array_equal(pred[0], np.where(first == 255, 0, first))
    for k in (1, 2):
        truth = np.roll(np.where(first == 255, 0, first), k * shift, axis=1)
        for part in (2, 4, 13):
            iou = ((pred[k] == part) & (truth == part)).sum() / ((pred[k] == part) | (truth == part)).sum()
            assert iou > 0.8, (k, part, iou)


def test_propagate_parts_rejects_ids_outside_the_classes():
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    labels = np.zeros((16, 16), np.uint8)
    labels[4:8, 4:8] = 20
    with pytest.raises(ValueError, match="20"):
        propagate_parts(lambda x, layer: x, frames, labels, PropagationConfig(), size=16)
