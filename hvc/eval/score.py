"""The ``hvc evaluate`` stage: score a benchmark's predictions with its official metric
(:mod:`hvc.eval.metrics`: J&F, VOST J; mIoU; PCK), or read a server's score file.
"""

from __future__ import annotations

import logging
from pathlib import Path


from hvc.config.benchmarks import Benchmark, get_benchmark
from hvc.eval.readers import read_benchmark
from hvc.eval.video import Video
from hvc.io import (
    DataError,
    atomic_dir,
    write_json,
)
from hvc.eval.metrics import evaluate_folder, evaluate_vost_folder
from hvc.config.params import Params
from hvc.eval.parts import evaluate_parts
from hvc.eval.pose import evaluate_pose, read_pose
from hvc.eval.submission import read_server_scores
from hvc.config.code import provenance

log = logging.getLogger(__name__)


def evaluate_benchmark(
    p: Params,
    benchmark: str,
    root: Path,
    predictions: Path,
    out: Path | None,
    server_scores: Path | None = None,
    archive: Path | None = None,
    workers: int = 1,
    toolkit_csv: Path | None = None,
) -> tuple[dict, dict]:
    """Score a benchmark's predictions with its official definitions.

    - davis: J&F, J/F mean, recall, decay (DAVIS toolkit, :mod:`hvc.eval.metrics`);
    - vost: J and J on the last 25% of frames (VOST toolkit);
    - miou: part mIoU (VIP, :mod:`hvc.eval.parts`); pck: PCK@0.1/0.2 (JHMDB, :mod:`hvc.eval.pose`);
    - server: the scores of the server's file ``server_scores`` when it exists
      (:func:`hvc.eval.submission.read_server_scores`); until then the summary's ``status``
      says which archive (:func:`hvc.eval.submission.write_archive`) to upload where.

    Returns (summary, per-object or per-video details), fractions in [0, 1]; the summary's
    ``provenance`` says which code scored it (:func:`hvc.config.code.provenance`). When ``out``
    is given, writes the details to ``<out stem>.objects.json`` and then the summary to ``out``.
    ``workers``: sequences scored at once (davis scoring). ``toolkit_csv``: a folder that
    gets, for davis scoring, the DAVIS toolkit's ``global_results-val.csv`` and
    ``per-sequence_results-val.csv`` (:func:`hvc.eval.metrics.davis_toolkit_csvs`), for other
    scorings a README.txt saying why there are none; written atomically.
    Raises:
        DataError: naming a missing or malformed prediction, annotation or score file.
    """
    bench = get_benchmark(benchmark)
    videos = read_benchmark(benchmark, root)  # a server-scored benchmark's folder is checked too
    if bench.scoring == "server":
        scores, details = _server_scores(bench, server_scores, archive), {}
    else:
        scores, details = _local_scores(p, bench, videos, root, predictions, workers)
    scores["provenance"] = provenance("evaluate", p.method)
    if toolkit_csv is not None:
        _write_toolkit_csv(toolkit_csv, benchmark, bench.scoring, scores, details)
    if out is not None:
        write_json(out.with_name(out.stem + ".objects.json"), details)
        write_json(out, scores)
    return scores, details


def _local_scores(
    p: Params, bench: Benchmark, videos: list[Video], root: Path, predictions: Path, workers: int
) -> tuple[dict, dict]:
    """(summary, details) of a benchmark scored here: davis, vost, miou or pck (see
    :func:`evaluate_benchmark`)."""
    names = [v.name for v in videos]
    details: dict = {}
    if bench.scoring == "davis":
        scores = evaluate_folder(Path(root) / bench.annotations, predictions, names, bound_th=p.eval.bound_th, workers=workers)
        details = scores.pop("per_object")
    elif bench.scoring == "vost":
        scores = evaluate_vost_folder(Path(root) / bench.annotations, predictions, names)
        details = scores.pop("per_object")
    elif bench.scoring == "miou":
        scores = evaluate_parts(videos, predictions)
    elif bench.scoring == "pck":
        pred = {v.name: read_pose(Path(predictions) / f"{v.name}.json") for v in videos}
        try:
            scores = evaluate_pose(videos, pred)
        except ValueError as e:
            raise DataError(Path(predictions), str(e)) from None
    else:
        raise ValueError(f"unknown scoring {bench.scoring!r}")
    return scores, details


def _server_scores(bench: Benchmark, server_scores: Path | None, archive: Path | None) -> dict:
    """A server-scored benchmark's summary: the server's scores once its file exists, else
    a ``status`` saying what to upload where."""
    scores = {"server": bench.server, "archive": str(archive) if archive else None}
    if server_scores is not None and Path(server_scores).is_file():
        scores.update(read_server_scores(Path(server_scores)))
        scores["score_file"] = str(server_scores)
    else:
        scores["status"] = (
            f"needs server score: upload {archive or 'the submission archive (hvc submission)'} to {bench.server}, "
            f"save the server's score file as {server_scores or '<--server-scores PATH>'}, run again"
        )
    return scores


def _write_toolkit_csv(folder: Path, benchmark: str, scoring: str, scores: dict, details: dict) -> None:
    """The DAVIS toolkit's two CSVs of a davis-scored benchmark in ``folder`` (atomic)."""
    from hvc.io import write_text
    from hvc.eval.metrics import davis_toolkit_csvs

    with atomic_dir(folder) as tmp:
        if scoring == "davis":
            global_csv, sequence_csv = davis_toolkit_csvs(scores, details)
            write_text(tmp / "global_results-val.csv", global_csv)
            write_text(tmp / "per-sequence_results-val.csv", sequence_csv)
        else:
            write_text(tmp / "README.txt", f"{benchmark} is scored by {scoring}, not the DAVIS toolkit: no toolkit CSVs.\n")
