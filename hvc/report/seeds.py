"""Runs repeated over seeds (``params.seeds``), summarised as mean ± standard deviation.

The tables stage receives one summary per run (experiment key, source); the runs of one
experiment over its seeds (:func:`hvc.config.plan.seed_groups`) are folded into one
summary whose numbers are :class:`MeanStd` values, so every table builder shows them
unchanged, as means, and the formats print ``54.0 ± 1.2``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


class MeanStd(float):
    """A float (the mean over seeds) that also carries the sample standard deviation
    (``statistics.stdev``, n - 1 in the denominator; NaN for one run) and the number of
    runs ``n``. Arithmetic with a plain number (``x / 3600``, ``100 * x``) keeps both."""

    std: float
    n: int

    def __new__(cls, mean: float, std: float = math.nan, n: int = 1) -> MeanStd:
        obj = super().__new__(cls, mean)
        obj.std, obj.n = float(std), int(n)
        return obj

    @classmethod
    def of(cls, values: list[float]) -> MeanStd:
        """Mean and sample standard deviation of ``values`` (at least one)."""
        values = [float(v) for v in values]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return cls(statistics.fmean(values), std, len(values))

    def scaled(self, factor: float) -> MeanStd:
        """Both mean and standard deviation times ``factor`` (fractions to percent)."""
        return MeanStd(float(self) * factor, self.std * abs(factor), self.n)

    def __mul__(self, other: Any) -> Any:
        return self.scaled(other) if isinstance(other, (int, float)) and not isinstance(other, MeanStd) else float(self) * other

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        return self.scaled(1 / other) if isinstance(other, (int, float)) and not isinstance(other, MeanStd) else float(self) / other

    def __repr__(self) -> str:
        return f"MeanStd({float(self)!r}, {self.std!r}, n={self.n})"

    def text(self, fmt: str) -> str:
        """``mean ± std`` in the format spec ``fmt`` (the mean alone for one run)."""
        if self.n < 2 or self.std != self.std:
            return format(float(self), fmt)
        return f"{format(float(self), fmt)} ± {format(self.std, fmt)}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def fold(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several runs: the first run's entries, with every number that the
    runs have (top level) replaced by its :class:`MeanStd` over the runs that have it."""
    out = dict(summaries[0])
    for key, value in summaries[0].items():
        if _is_number(value):
            out[key] = MeanStd.of([s[key] for s in summaries if _is_number(s.get(key))])
    return out


def aggregate_seeds(scores: dict[tuple[str, str], dict], groups: dict[str, list[str]]) -> dict[tuple[str, str], dict]:
    """``scores`` with the runs of each seed group folded (:func:`fold`) under the group's
    key; repetitions' own keys are dropped.

    Args:
        scores: {(experiment key, source): summary}, every run's own.
        groups: :func:`hvc.config.plan.seed_groups` (key → its keys over the seeds).
    """
    repeats = {k for keys in groups.values() for k in keys[1:]}
    out = {}
    for (key, source), summary in scores.items():
        if key in repeats:
            continue
        runs = [scores[(k, source)] for k in groups.get(key, [key]) if (k, source) in scores]
        out[(key, source)] = fold(runs) if len(runs) > 1 else summary
    return out


def seeds_note(seeds: list[int]) -> str:
    """The note under a table whose trained rows are means over seeds."""
    return (
        f"Trained rows: mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} "
        "(one model per seed); baselines ran at the global seed."
    )
