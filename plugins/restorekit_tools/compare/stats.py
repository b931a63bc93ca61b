"""Statistics for comparison rows: means with t-distribution confidence intervals, paired differences."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ROW_KEYS = ("file", "pipeline", "metric", "value", "unit", "error", "notes")  #: columns of results.csv

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean of n values and its confidence interval [low, high] (NaN where n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (a difference that is not chance)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class SummaryRow:
    """One pipeline x metric: its mean, and its mean paired difference against the baseline row."""

    pipeline: str
    metric: str
    unit: str
    stat: Stat
    diff: Stat | None  # None for the baseline itself
    errors: int


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> Stat:
    """Mean and two-sided t-distribution confidence interval of finite `values`."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return Stat(mean, math.nan, math.nan, 1)
    from scipy import stats

    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Stat(mean, mean - half, mean + half, n)


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def summarize(rows: Sequence[dict], baseline: str | None = None, confidence: float = CONFIDENCE) -> list[SummaryRow]:
    """Per pipeline x metric: mean and CI over files, and the mean paired difference against `baseline`.

    `baseline` defaults to the "degraded" row (or "input" / "generated" with reference-free runs).
    Differences pair the two rows of the same file; files where either failed are left out.
    Rows with an empty metric (a failed run) count as errors of their pipeline.
    """
    pipelines = _ordered(r["pipeline"] for r in rows if r["pipeline"])
    if baseline is None:
        baseline = next((b for b in ("degraded", "input", "generated") if b in pipelines), None)
    metrics = _ordered(r["metric"] for r in rows if r["metric"])
    table: dict[tuple[str, str], dict[str, float]] = {}
    units: dict[str, str] = {}
    errors: dict[tuple[str, str], int] = {}
    run_errors: dict[str, int] = {}
    for r in rows:
        if not r["metric"]:
            run_errors[r["pipeline"]] = run_errors.get(r["pipeline"], 0) + 1
            continue
        units.setdefault(r["metric"], r.get("unit") or "")
        key = (r["pipeline"], r["metric"])
        if r.get("value") is None or r.get("error"):
            errors[key] = errors.get(key, 0) + 1
        else:
            table.setdefault(key, {})[r["file"]] = float(r["value"])
    out = []
    for metric in metrics:
        base = table.get((baseline, metric), {}) if baseline else {}
        for pipeline in pipelines:
            values = table.get((pipeline, metric), {})
            if not values and (pipeline, metric) not in errors and pipeline not in run_errors:
                continue  # this metric does not apply to this row (e.g. reference-free on "clean" only)
            diff = None
            if baseline and pipeline != baseline:
                diff = mean_ci([v - base[f] for f, v in values.items() if f in base], confidence)
            out.append(SummaryRow(pipeline, metric, units.get(metric, ""), mean_ci(values.values(), confidence),
                                  diff, errors.get((pipeline, metric), 0) + run_errors.get(pipeline, 0)))
    return out
