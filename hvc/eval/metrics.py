"""DAVIS semi-supervised metrics: region similarity J, boundary accuracy F, their statistics.

A re-implementation, without OpenCV, of the official DAVIS toolkit
(github.com/davisvideochallenge/davis2017-evaluation): ``davis2017/metrics.py``
(``db_eval_iou``, ``db_eval_boundary``, ``f_measure``, ``_seg2bmap``),
``davis2017/utils.py`` (``db_statistics``), ``davis2017/evaluation.py`` and
``davis2017/davis.py`` (the semi-supervised protocol) and ``evaluation_method.py`` (the
global table). It performs the same arithmetic on the same pixel counts, so on every input
the toolkit accepts the numbers agree exactly (not just to rounding).

Toolkit behaviour kept on purpose, because published numbers depend on it:

- the first and the last frame of each sequence are not scored;
- the objects of a sequence are 1..(largest label in the *first* ground-truth frame);
  the label 255 (void) in the ground truth counts as background, and void pixels are
  never excluded from J or F (the toolkit builds its void mask after binarising the
  masks, so that mask is always empty);
- J_mean, J_recall and J_decay ignore NaN objects; F_mean, F_recall and F_decay do not.

Differences, none of which the toolkit reaches on DAVIS data:

- :func:`seg2bmap` with a smaller ``width``/``height`` follows David Martin's original
  MATLAB ``seg2bmap``; the toolkit's Python port of that branch is broken (it adds where
  MATLAB multiplies) and is never called;
- decay bin indices are plain integers; the toolkit casts them to ``uint8``, which wraps
  for sequences of 256 frames or more;
- a prediction with *fewer* objects than the ground truth scores the missing objects
  as empty masks; the toolkit stops with an error;
- ``bound_th >= 1`` (a radius in pixels) must be a whole number;
- fewer than three frames (nothing left to score) is an error, not NaN.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from hvc.io import DataError, frame_order, read_mask

log = logging.getLogger(__name__)

VOID_LABEL = 255

# --------------------------------------------------------------------------- per frame


def seg2bmap(seg: np.ndarray, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Boundary map of a mask, one pixel wide: the toolkit's ``_seg2bmap`` rule.

    A pixel is on the boundary when its value (after binarising, nonzero = 1) differs
    from its east, south or south-east neighbour. In the last row only the east
    neighbour is compared, in the last column only the south one, and the bottom-right
    pixel is never a boundary pixel. The boundary of a region therefore sits half a
    pixel towards the origin from the region's edge: a filled s x s square gives the
    outline of an (s+1) x (s+1) square, 4s pixels, whose top-left corner is one pixel up
    and left of the square's.

    Args:
        seg: mask of shape (H, W), or (..., H, W) for a stack of frames (each frame on
            its own); any dtype, nonzero = foreground.
        width, height: size of the returned map, at most (W, H) with the same aspect
            ratio (within 0.01); a boundary pixel (y, x) lands on
            (y * height // h, x * width // w), as in Martin's MATLAB ``seg2bmap``.
            Only for a single (H, W) mask. Default: the size of ``seg``.
    Returns:
        bool array, same shape as ``seg`` (or (height, width)).
    Raises:
        ValueError: ``seg`` has fewer than 2 dimensions, or ``width``/``height`` are
            larger than the mask or change its aspect ratio.
    Source: ``davis2017/metrics.py::_seg2bmap``.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim < 2:
        raise ValueError(f"seg2bmap needs a mask of shape (..., H, W), got shape {seg.shape}")
    h, w = seg.shape[-2:]

    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[..., :, :-1] = seg[..., :, 1:]
    south[..., :-1, :] = seg[..., 1:, :]
    south_east[..., :-1, :-1] = seg[..., 1:, 1:]

    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[..., -1, :] = seg[..., -1, :] ^ east[..., -1, :]
    bmap[..., :, -1] = seg[..., :, -1] ^ south[..., :, -1]
    bmap[..., -1, -1] = False

    width = w if width is None else int(width)
    height = h if height is None else int(height)
    if (width, height) == (w, h):
        return bmap
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap rescales a single (H, W) mask only, got shape {seg.shape}")
    if width > w or height > h or abs(width / height - w / h) > 0.01:
        raise ValueError(f"cannot convert a {w}x{h} mask to a {width}x{height} boundary map")
    ys, xs = np.nonzero(bmap)
    out = np.zeros((height, width), dtype=bool)
    out[ys * height // h, xs * width // w] = True
    return out


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Region similarity J: intersection over union of each frame's masks.

    Args:
        gt, pred: masks of shape (T, H, W); any dtype, nonzero = foreground.
    Returns:
        float64 array (T,) in [0, 1]; 1 where both masks of a frame are empty.
    Raises:
        ValueError: the shapes differ or are not (T, H, W).
    Source: ``davis2017/metrics.py::db_eval_iou`` (without void pixels, as the
    semi-supervised evaluation calls it).
    """
    gt, pred = _frames(gt, pred)
    inter = np.count_nonzero(gt & pred, axis=(1, 2))
    union = np.count_nonzero(gt | pred, axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """Boundary accuracy F: F-measure of boundary precision and recall, per frame.

    Both boundaries come from :func:`seg2bmap`. A predicted boundary pixel is correct
    when a ground-truth boundary pixel lies within distance r of it, i.e. inside the
    disk {dy^2 + dx^2 <= r^2} around it; symmetrically for recall. This is exactly the
    toolkit's dilation with ``skimage.morphology.disk(r)`` followed by an intersection,
    computed with a k-d tree on the boundary pixels instead of dilating whole images.

    r = ceil(bound_th * sqrt(H^2 + W^2)) pixels for ``bound_th < 1`` (8 px at 854x480
    for the default 0.008), or r = ``bound_th`` pixels for ``bound_th >= 1``.

    Precision P = correct predicted boundary pixels / predicted boundary pixels, and
    recall R likewise over ground-truth boundary pixels; a ratio with no boundary pixels
    below it is 1. That reproduces the toolkit's conventions: both boundaries empty ->
    P = R = 1 (F = 1); one empty -> F = 0. F = 2PR / (P + R), and 0 when P + R = 0.

    Args:
        gt, pred: masks of shape (T, H, W); any dtype, nonzero = foreground.
        bound_th: boundary tolerance, a fraction of the image diagonal (< 1) or a
            whole number of pixels (>= 1).
    Returns:
        float64 array (T,) in [0, 1].
    Raises:
        ValueError: the shapes differ or are not (T, H, W); ``bound_th`` <= 0, or >= 1
            and not a whole number.
    Source: ``davis2017/metrics.py::db_eval_boundary`` and ``f_measure``.
    """
    gt, pred = _frames(gt, pred)
    radius = _boundary_radius(bound_th, gt.shape[1:])
    gt_boundary = seg2bmap(gt)
    pred_boundary = seg2bmap(pred)

    n_gt = np.count_nonzero(gt_boundary, axis=(1, 2))
    n_pred = np.count_nonzero(pred_boundary, axis=(1, 2))
    gt_points = _points_per_frame(gt_boundary, n_gt)
    pred_points = _points_per_frame(pred_boundary, n_pred)
    gt_hits = np.array([_count_near(g, p, radius) for g, p in zip(gt_points, pred_points)])
    pred_hits = np.array([_count_near(p, g, radius) for g, p in zip(gt_points, pred_points)])

    precision = np.where(n_pred == 0, 1.0, pred_hits / np.maximum(n_pred, 1))
    recall = np.where(n_gt == 0, 1.0, gt_hits / np.maximum(n_gt, 1))
    denom = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where P + R = 0, replaced by 0
        return np.where(denom == 0, 0.0, 2 * precision * recall / denom)


def _frames(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool (T, H, W) arrays; ValueError on a shape mismatch."""
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(
            f"ground truth and prediction must both have shape (T, H, W); "
            f"got {gt.shape} and {pred.shape}"
        )
    return gt, pred


def _boundary_radius(bound_th: float, shape_hw: tuple[int, int]) -> int:
    """The F tolerance in whole pixels, as the toolkit computes it."""
    if not bound_th > 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(shape_hw)))


def _points_per_frame(bmap: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """The (y, x) coordinates of the True pixels of each frame of ``bmap`` (T, H, W),
    as T integer arrays (counts[t], 2)."""
    _, y, x = np.nonzero(bmap)  # C order: sorted by frame
    return np.split(np.stack([y, x], axis=1), np.cumsum(counts)[:-1])


def _count_near(points: np.ndarray, targets: np.ndarray, radius: int) -> int:
    """How many of ``points`` (n, 2) have one of ``targets`` (m, 2) within Euclidean
    distance ``radius``, tested exactly on integer squared distances."""
    if len(points) == 0 or len(targets) == 0:
        return 0
    _, nearest = cKDTree(targets).query(points, distance_upper_bound=radius + 0.5)
    found = nearest < len(targets)
    d2 = ((points[found] - targets[nearest[found]]) ** 2).sum(axis=1)
    return int(np.count_nonzero(d2 <= radius * radius))


# --------------------------------------------------------------------------- statistics


def statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame J or F values.

    - mean: the mean over frames, ignoring NaN;
    - recall: the fraction of frames with a value > 0.5; NaN frames count in the
      denominator (as not recalled), as in the toolkit;
    - decay: mean of the first quarter minus mean of the last quarter (NaN ignored),
      with the toolkit's 4 bins: for n frames the bin edges are
      round(linspace(1, n, 5) + 1e-10) - 1 and bin i holds frames edge_i..edge_{i+1},
      both ends included (neighbouring bins share a frame).

    Args:
        per_frame: 1-D array (n,) of values in [0, 1] (NaN allowed).
    Returns:
        (mean, recall, decay) as floats, fractions (not percents); all NaN when n = 0.
        mean (and decay) is NaN when every frame (of a bin) is NaN.
    Raises:
        ValueError: ``per_frame`` is not 1-D.
    Source: ``davis2017/utils.py::db_statistics``.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"statistics expects a 1-D array of per-frame values, got shape {values.shape}")
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slices give NaN
        mean = np.nanmean(values)
        decay = np.nanmean(first) - np.nanmean(last)
    recall = np.mean(values > 0.5)
    return float(mean), float(recall), float(decay)


# --------------------------------------------------------------------------- protocol


def evaluate_sequence(
    gt: np.ndarray,
    pred: np.ndarray,
    num_objects: int | None = None,
    bound_th: float = 0.008,
    measures: tuple[str, ...] = ("J", "F"),
) -> dict[int, dict[str, np.ndarray]]:
    """Per-object, per-frame J and F of one sequence, semi-supervised protocol.

    The first and the last frame are not scored. The ground-truth label 255 (void)
    counts as background. An object absent from every predicted frame scores as an
    empty prediction.

    Args:
        gt, pred: label maps of shape (T, H, W), T >= 3; 0 = background, k = object k.
        num_objects: the objects scored are 1..num_objects. Default: the largest label
            of the first ground-truth frame (the toolkit's rule; DAVIS objects all appear
            in the first frame).
        bound_th: the F tolerance, see :func:`f_measure`.
        measures: which of "J" and "F" to compute (VOST scores J only).
    Returns:
        ``{k: {"J": (T-2,) float64, "F": (T-2,) float64}}`` for k = 1..num_objects, in
        that order (empty when there are no objects).
    Raises:
        ValueError: shapes differ or are not (T, H, W); T < 3; a scored predicted frame
            has a label above ``num_objects``.
    Source: ``davis2017/evaluation.py::DAVISEvaluation.evaluate`` and
    ``_evaluate_semisupervised``, ``davis2017/davis.py::DAVIS.get_all_masks``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(
            f"ground truth and prediction must both be label maps of shape (T, H, W); "
            f"got {gt.shape} and {pred.shape}"
        )
    if len(gt) < 3:
        raise ValueError(f"need at least 3 frames (the first and last are not scored), got {len(gt)}")
    gt = np.where(gt == VOID_LABEL, 0, gt)
    if num_objects is None:
        num_objects = int(gt[0].max())

    gt, pred = gt[1:-1], pred[1:-1]
    top = pred.max(axis=(1, 2))
    if top.max() > num_objects:
        t = int(np.argmax(top > num_objects))
        raise ValueError(
            f"the prediction has label {int(top[t])} in frame {t + 1} but the ground truth "
            f"has only {num_objects} object(s)"
        )
    scores = {}
    for k in range(1, num_objects + 1):
        gt_k, pred_k = gt == k, pred == k
        scores[k] = {}
        if "J" in measures:
            scores[k]["J"] = jaccard(gt_k, pred_k)
        if "F" in measures:
            scores[k]["F"] = f_measure(gt_k, pred_k, bound_th)
    return scores


def summarize(per_object: dict[str, dict[str, np.ndarray]]) -> dict:
    """The DAVIS table: statistics per object, pooled over all objects of all sequences.

    Each object (``"<sequence>_<k>"``) counts once, whatever its sequence, as in the
    toolkit. The J columns ignore NaN objects, the F columns do not (toolkit quirk).

    Args:
        per_object: ``{object id: {"J": (n,) array, "F": (n,) array}}``, e.g. from
            :func:`evaluate_sequence` with ids ``f"{sequence}_{k}"``.
    Returns:
        plain floats, fractions in [0, 1] (not percents)::

            {"JF_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay",
             "per_object": {object id: {"J_mean", "J_recall", "J_decay",
                                        "F_mean", "F_recall", "F_decay"}}}

        with JF_mean = (J_mean + F_mean) / 2 and ``per_object`` in input order.
    Raises:
        ValueError: no objects, or an entry without "J" and "F".
    Source: ``davis2017/evaluation.py::DAVISEvaluation.evaluate`` and
    ``evaluation_method.py`` (the global and per-sequence tables).
    """
    if not per_object:
        raise ValueError("no objects to summarize")
    rows = {}
    for obj_id, scores in per_object.items():
        if "J" not in scores or "F" not in scores:
            raise ValueError(f"object {obj_id!r} needs per-frame 'J' and 'F' arrays")
        j_mean, j_recall, j_decay = statistics(scores["J"])
        f_mean, f_recall, f_decay = statistics(scores["F"])
        rows[obj_id] = {
            "J_mean": j_mean, "J_recall": j_recall, "J_decay": j_decay,
            "F_mean": f_mean, "F_recall": f_recall, "F_decay": f_decay,
        }  # fmt: skip

    def pooled(key: str) -> float:
        column = np.array([row[key] for row in rows.values()])
        if key.startswith("J"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                return float(np.nanmean(column))
        return float(np.mean(column))

    table = {key: pooled(key) for key in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")}
    table["JF_mean"] = (table["J_mean"] + table["F_mean"]) / 2
    table["per_object"] = rows
    return table


def evaluate_folder(
    gt_root: str | os.PathLike[str],
    pred_root: str | os.PathLike[str],
    sequences: list[str],
    bound_th: float = 0.008,
    workers: int = 1,
) -> dict:
    """Evaluate predicted masks against DAVIS-layout annotations.

    Reads ``gt_root/<seq>/*.png`` (sorted by name) and ``pred_root/<seq>/<same name>``
    with :func:`hvc.io.read_mask` (DAVIS 2016 0/255 greyscale masks read as labels
    {0, 1}, palette PNGs as their indices); every ground-truth frame needs a prediction,
    the first and last included, and no other PNG may sit in the prediction folder.

    Args:
        gt_root: e.g. ``DAVIS/Annotations/480p``.
        pred_root: folder with one subfolder of PNG masks per sequence.
        sequences: sequence names, in the order the objects are reported.
        bound_th: the F tolerance, see :func:`f_measure`.
        workers: sequences scored at once, in threads (decoding, NumPy and the k-d trees
            release the GIL); the result does not depend on it.
    Returns:
        :func:`summarize` of all objects, ids ``f"{seq}_{k}"``; plus ``"warnings"``, a list
        of one line per first ground-truth frame whose object ids have a gap (labels
        {1, 3}: the toolkit scores objects 1..max, so the missing object 2 is scored,
        as an empty prediction of an empty object, J = F = 1); each is also logged; and
        ``scored_frames`` (frames scored, all sequences) and ``foreground_frames`` (those
        whose prediction holds a foreground pixel: 0 marks a degenerate prediction, all
        background, whose J&F is no result; not a toolkit field).
    Raises:
        DataError: naming the file or folder: no ground truth for a sequence, fewer than
            3 frames, a missing or an extra prediction, masks of a different size,
            an unreadable mask, a predicted label above the number of objects, an empty
            first ground-truth frame, a ground-truth object absent from the first frame.
    Source: ``davis2017/evaluation.py::DAVISEvaluation.evaluate``,
    ``davis2017/results.py::Results.read_masks``.
    """
    gaps: list[str] = []
    foreground: dict[str, tuple[int, int]] = {}  # sequence -> (scored frames, those with a predicted foreground pixel)

    def score(seq: str) -> dict:
        return _score_sequence(Path(gt_root), Path(pred_root), seq, bound_th, gaps, foreground)

    if workers > 1 and len(sequences) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(sequences))) as pool:
            results = list(pool.map(score, sequences))  # in order; the first error is raised
    else:
        results = [score(seq) for seq in sequences]
    per_object = {}
    for seq, scores in zip(sequences, results):
        for k, object_scores in scores.items():
            per_object[f"{seq}_{k}"] = object_scores
    table = summarize(per_object)
    table["scored_frames"] = sum(n for n, _ in foreground.values())
    table["foreground_frames"] = sum(k for _, k in foreground.values())
    if gaps:
        table["warnings"] = sorted(gaps)
    return table


def _score_sequence(
    gt_root: Path, pred_root: Path, seq: str, bound_th: float, gaps: list[str], foreground: dict[str, tuple[int, int]]
) -> dict:
    """:func:`evaluate_sequence` of sequence ``seq`` (see :func:`evaluate_folder`); a gap in
    the first ground-truth frame's object ids is logged and its line appended to ``gaps``;
    ``foreground[seq]`` gets (scored frames, scored frames with a predicted foreground pixel).

    Raises:
        DataError: as :func:`evaluate_folder`, naming the file or the prediction folder.
    """
    gt_dir, pred_dir = gt_root / seq, pred_root / seq
    gt, pred = _read_sequence(gt_dir, pred_dir)
    scored = pred[1:-1]  # the first and last frames are not scored
    foreground[seq] = (len(scored), int((scored.reshape(len(scored), -1) > 0).any(axis=1).sum()))
    gap = object_id_gap(gt[0])
    if gap:
        msg = f"{seq}: first ground-truth frame has object ids {gap[0]}; missing {gap[1]} scored as phantom objects"
        gaps.append(msg)
        log.warning("%s", msg)
    single = _single_object_predictions(pred_dir, gt[0])
    if single:
        gaps.append(f"{seq}: {single}")
        log.warning("%s: %s", seq, single)
    try:
        return evaluate_sequence(gt, pred, bound_th=bound_th)
    except ValueError as e:
        raise DataError(pred_dir, str(e)) from None


def _single_object_predictions(pred_dir: Path, first_truth: np.ndarray) -> str | None:
    """A warning when a sequence of several objects is predicted as greyscale 0/255 PNGs.

    Such a mask (the DAVIS 2016 format) holds one object, read as label 1
    (:func:`hvc.io.read_mask`): on a multi-object benchmark every other object is scored
    as missed, which looks like a bad method rather than a format mix-up.

    Args:
        pred_dir: the sequence's prediction folder.
        first_truth: (H, W) first ground-truth label map.
    Returns:
        the warning line, or None (palette predictions, or one object in the ground truth).
    """
    objects = sorted(set(np.unique(first_truth).tolist()) - {0, VOID_LABEL})
    if len(objects) < 2:
        return None
    from PIL import Image

    grey = []
    for path in sorted(pred_dir.glob("*.png"), key=frame_order):
        try:
            with Image.open(path) as im:
                if im.mode in ("L", "1"):
                    grey.append(path.name)
        except OSError:
            continue  # unreadable files are reported by read_mask
    if not grey:
        return None
    return (
        f"{len(grey)} prediction(s) (e.g. {pred_dir / grey[0]}) are greyscale 0/255 masks, which hold one object, "
        f"but the ground truth has {len(objects)} objects {objects}: objects other than 1 are scored as missed; "
        "save predictions as palette PNGs whose indices are object ids"
    )


def object_id_gap(first: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(object ids present, ids missing below the largest) of a first-frame label map
    (H, W), void 255 aside; None when the ids are 1..K without a gap."""
    present = sorted(set(np.unique(first).tolist()) - {0, VOID_LABEL})
    missing = sorted(set(range(1, max(present, default=0) + 1)) - set(present))
    return (present, missing) if missing else None


def evaluate_vost_folder(gt_root: str | os.PathLike[str], pred_root: str | os.PathLike[str], sequences: list[str]) -> dict:
    """VOST's table: J and J on the last 25% of the scored frames, per object, pooled.

    The VOST toolkit (github.com/TRI-ML/VOST ``evaluation/source/evaluation.py``,
    ``evaluation_method.py``) is the DAVIS semi-supervised protocol restricted to J:
    only annotated frames are scored (VOST annotates a subset of the frames; predictions
    for the others are ignored), the first and last annotated frames are not; for each
    object the per-frame J values are summarised by :func:`statistics` over all scored
    frames and over the last quarter, from index floor(0.75 * n) on; each column is the
    plain mean over all objects of all sequences.

    Args:
        gt_root: ``VOST/Annotations``.
        pred_root: folder with one subfolder of PNG masks per sequence.
        sequences: sequence names.
    Returns:
        ``{"J_mean", "J_recall", "J_decay", "J_last_mean", "J_last_recall",
        "J_last_decay", "per_object": {id: {same keys}}}``, fractions.
    Raises:
        DataError: as :func:`evaluate_folder` (a prediction for an unannotated frame is
            not an error here).
    """
    rows = {}
    for seq in sequences:
        gt_dir, pred_dir = Path(gt_root) / seq, Path(pred_root) / seq
        gt, pred = _read_sequence(gt_dir, pred_dir, extra_ok=True)
        try:
            scores = evaluate_sequence(gt, pred, bound_th=0.008, measures=("J",))
        except ValueError as e:
            raise DataError(pred_dir, str(e)) from None
        for k, object_scores in scores.items():
            j = object_scores["J"]
            last = j[int(np.floor(len(j) * 0.75)) :]
            row = dict(zip(("J_mean", "J_recall", "J_decay"), statistics(j)))
            row.update(zip(("J_last_mean", "J_last_recall", "J_last_decay"), statistics(last)))
            rows[f"{seq}_{k}"] = row
    if not rows:
        raise DataError(Path(gt_root), "no objects to score")
    table = {key: float(np.mean([r[key] for r in rows.values()])) for key in next(iter(rows.values()))}
    table["per_object"] = rows
    return table


def _read_sequence(gt_dir: Path, pred_dir: Path, extra_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth and predicted label maps of one sequence, (T, H, W) uint8 each; with
    ``extra_ok`` predictions of frames without ground truth are ignored, not an error."""
    names = sorted((p.name for p in gt_dir.glob("*.png")), key=frame_order)  # 2 before 10
    if not names:
        raise DataError(gt_dir, "no ground-truth PNG masks")
    if len(names) < 3:
        raise DataError(gt_dir, f"{len(names)} frame(s); the protocol needs at least 3")
    if not pred_dir.is_dir():
        raise DataError(pred_dir, "prediction folder not found")
    predicted = {p.name for p in pred_dir.glob("*.png")}
    for name in names:
        if name not in predicted:
            raise DataError(pred_dir / name, f"missing prediction for ground-truth frame {gt_dir / name}")
    extra = sorted(predicted - set(names))
    if extra and not extra_ok:
        raise DataError(
            pred_dir / extra[0],
            f"{len(predicted)} predicted frames but {len(names)} ground-truth frames in {gt_dir}; "
            f"this frame has no ground truth",
        )

    gt_frames, pred_frames = [], []
    for name in names:
        g = read_mask(gt_dir / name)
        p = read_mask(pred_dir / name)
        if gt_frames and g.shape != gt_frames[0].shape:
            first = gt_dir / names[0]
            raise DataError(gt_dir / name, f"mask is {_size(g)} but {first} is {_size(gt_frames[0])}")
        if p.shape != g.shape:
            truth = gt_dir / name
            raise DataError(pred_dir / name, f"mask is {_size(p)} but the ground truth {truth} is {_size(g)}")
        gt_frames.append(g)
        pred_frames.append(p)
    _check_ground_truth_objects(gt_dir, names, gt_frames)
    return np.stack(gt_frames), np.stack(pred_frames)


def _check_ground_truth_objects(gt_dir: Path, names: list[str], gt_frames: list[np.ndarray]) -> None:
    """The protocol scores the objects of the first ground-truth frame: refuse ground truth
    it would silently get wrong (an empty first frame, an object absent from it)."""
    first = set(np.unique(gt_frames[0]).tolist()) - {0, VOID_LABEL}
    if not first:
        raise DataError(gt_dir / names[0], "first-frame mask is empty: no object to score")
    for name, g in zip(names[1:], gt_frames[1:]):
        new = sorted(set(np.unique(g).tolist()) - {0, VOID_LABEL} - first)
        if new:
            raise DataError(
                gt_dir / name,
                f"object label(s) {new} absent from the first frame {names[0]} (labels {sorted(first)}); "
                "the semi-supervised protocol scores only objects annotated in the first frame",
            )


def _size(mask: np.ndarray) -> str:
    """'WxH' of a (H, W) mask, for messages."""
    return f"{mask.shape[1]}x{mask.shape[0]}"


# --------------------------------------------------------------------------- toolkit CSVs

DAVIS_GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
DAVIS_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def davis_toolkit_csvs(summary: dict, per_object: dict[str, dict]) -> tuple[str, str]:
    """The two CSV files the DAVIS 2017 toolkit writes, from a :func:`summarize` result.

    Same file contents as ``evaluation_method.py`` of the davis2017-evaluation toolkit
    (pandas ``to_csv(index=False, float_format="%.3f")``): ``global_results-<set>.csv``
    with columns J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay (one row,
    fractions in [0, 1]) and ``per-sequence_results-<set>.csv`` with Sequence, J-Mean,
    F-Mean (one row per object, named ``<sequence>_<object>``), so scripts that read the
    toolkit's output read these.

    Args:
        summary: the pooled table (``JF_mean``, ``J_mean``, ... as fractions).
        per_object: ``{object id: {"J_mean", "F_mean", ...}}`` in the toolkit's order.
    Returns:
        (global CSV text, per-sequence CSV text), "\\n" line ends; NaN is an empty field
        (as pandas writes it).
    Source: github.com/davisvideochallenge/davis2017-evaluation, ``evaluation_method.py``.
    """

    def fmt(v: float | None) -> str:
        return "" if v is None or v != v else f"{v:.3f}"

    keys = ("JF_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")
    lines = [",".join(DAVIS_GLOBAL_COLUMNS), ",".join(fmt(summary[k]) for k in keys)]
    rows = [",".join(DAVIS_SEQUENCE_COLUMNS)]
    rows += [f"{name},{fmt(obj['J_mean'])},{fmt(obj['F_mean'])}" for name, obj in per_object.items()]
    return "\n".join(lines) + "\n", "\n".join(rows) + "\n"
