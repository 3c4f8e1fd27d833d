"""Benchmarks scored on an evaluation server: submission archives and the server's scores.

DAVIS 2017 test-dev and YouTube-VOS 2018/2019 valid publish no ground truth: their challenge servers score submissions.
The pipeline writes the archive the server expects, and reads back the score file the
user downloads from the server, so the paper's Tables 2, 9 and 10 fill in once it is
there:

- DAVIS 2017 test-dev: a zip of ``<sequence>/<frame>.png`` palette masks, every frame;
- YouTube-VOS valid: a zip of ``Annotations/<video>/<frame>.png``, every frame of
  ``valid/JPEGImages`` (the server's upload instructions).

Score files: the server's ``scores.txt`` (``key: value`` lines), a CSV with a header
row (as the DAVIS toolkit writes), or JSON; values in percent or as fractions. Keys are
matched without case, spaces or punctuation, see :data:`SCORE_KEYS`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

from hvc.io import DataError, atomic_path

# normalised key (lowercase, letters and digits only) → our metric name
SCORE_KEYS = {
    # YouTube-VOS: overall score and J/F on seen and unseen categories
    "overall": "overall",
    "overallscore": "overall",
    "jseen": "J_seen",
    "jseenmean": "J_seen",
    "fseen": "F_seen",
    "fseenmean": "F_seen",
    "junseen": "J_unseen",
    "junseenmean": "J_unseen",
    "funseen": "F_unseen",
    "funseenmean": "F_unseen",
    # DAVIS: the toolkit's global table
    "jfmean": "JF_mean",
    "jandfmean": "JF_mean",
    "globalmean": "JF_mean",
    "jmean": "J_mean",
    "jrecall": "J_recall",
    "jdecay": "J_decay",
    "fmean": "F_mean",
    "frecall": "F_recall",
    "fdecay": "F_decay",
}


def write_archive(predictions: Path, videos: list, out_zip: Path, prefix: str = "") -> dict:
    """Zip the predicted masks of every frame of every video for the evaluation server.

    Args:
        predictions: ``<predictions>/<video>/<frame>.png`` written by the propagate stage.
        videos: the benchmark's :class:`~hvc.eval.readers.Video` list (sets the frames that
            must be present).
        out_zip: the archive, written atomically.
        prefix: folder inside the archive (``"Annotations"`` for YouTube-VOS, ``""`` for DAVIS).
    Returns:
        ``{"archive": str, "videos": n, "frames": n}``.
    Raises:
        DataError: naming the missing prediction of a frame.
    """
    frames = 0
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for video in videos:
            for frame in video.frames:
                png = Path(predictions) / video.name / f"{frame.stem}.png"
                if not png.is_file():
                    raise DataError(png, f"missing prediction for frame {frame}; the archive needs every frame")
                zf.write(png, "/".join(part for part in (prefix, video.name, png.name) if part))
                frames += 1
    return {"archive": str(out_zip), "videos": len(videos), "frames": frames}


def read_server_scores(path: Path) -> dict[str, float]:
    """Scores of a server's result file, as fractions, keyed by our metric names.

    Args:
        path: ``scores.txt`` (``key: value`` lines), a CSV (header row + one row of values)
            or a JSON object.
    Returns:
        ``{metric: fraction}`` for every recognised key (:data:`SCORE_KEYS`); a value
        above 1 is read as a percentage.
    Raises:
        DataError: naming the file: unreadable, no recognised key, or a value that is
            not a number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the server's score file ({e})") from None
    pairs = _pairs(text)
    scores: dict[str, float] = {}
    for key, value in pairs:
        name = SCORE_KEYS.get(re.sub(r"[^a-z0-9]", "", key.lower().replace("&", "and")))
        if name is None:
            continue
        try:
            v = float(str(value).strip().rstrip("%"))
        except ValueError:
            raise DataError(path, f"{key!r} is {value!r}, not a number") from None
        scores[name] = v / 100 if v > 1 else v
    if not scores:
        raise DataError(
            path,
            "no score recognised; expected keys such as 'Overall', 'J_seen', 'F_unseen' (YouTube-VOS) "
            "or 'J&F-Mean', 'J-Mean', 'F-Mean' (DAVIS)",
        )
    return scores


def _pairs(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of a JSON object, a header + values CSV, or ``key: value`` lines."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return [(str(k), v) for k, v in obj.items() if not isinstance(v, (dict, list))]
    lines = [ln for ln in stripped.splitlines() if ln.strip()]
    if len(lines) >= 2 and "," in lines[0] and ":" not in lines[0]:
        rows = list(csv.reader(io.StringIO("\n".join(lines[:2]))))
        return list(zip(rows[0], rows[1]))
    pairs = []
    for ln in lines:
        key, sep, value = ln.partition(":")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs
