"""Measuring with several metrics at once: pick them, align once, collect values and errors.

The `Metric` contract and alignment are in the core (`restorekit.metrics`); this is
the tooling `restorekit metrics` and `compare` use.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from restorekit.errors import RestorekitError, UsageError, describe_failure
from restorekit.metrics import Metric, finite_value
from restorekit.metrics import LengthMismatchError, align
from restorekit.pipeline import parse_assignments

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.audio import Audio
    from restorekit.plugins import Registry


@dataclass
class MetricValue:
    """One measured value: `value` is None when `error` says why it could not be computed."""

    metric: str
    value: float | None
    unit: str = ""
    higher_is_better: bool | None = None
    error: str | None = None


@dataclass
class Measurement:
    """Values of several metrics for one estimate, the alignment notes, and the metrics skipped."""

    values: list[MetricValue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | None]:
        return {v.metric: v.value for v in self.values}


def metric_classes(registry: Registry | None = None) -> dict[str, type[Metric]]:
    """Registered metric classes by id, in registration order."""
    from restorekit.plugins import get_registry

    return dict((registry or get_registry()).metrics)


def parse_metric_overrides(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """`["lsd_band.low_hz=4000", ...]` as {"lsd_band": {"low_hz": 4000}} (values parsed as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(items, "METRIC.PARAM=VALUE", "lsd_band.low_hz=4000").items():
        metric_id, _, param = key.rpartition(".")
        out.setdefault(metric_id, {})[param] = value
    return out


def resolve_metrics(
    selection: Sequence[str | Metric] | None = None,
    *,
    reference: bool,
    params: dict[str, dict[str, Any]] | None = None,
    registry: Registry | None = None,
    include_slow: bool = False,
) -> tuple[list[Metric], dict[str, str]]:
    """Metric instances to run, and {id: reason} for those skipped (unavailable, or slow).

    With no `selection`, every registered metric that fits: reference metrics when
    `reference` is True, reference-free ones otherwise, except slow ones (`Metric.slow`,
    e.g. ViSQOL) unless `include_slow`; those are skipped with a note saying how to ask
    for them. A metric named in `selection` always runs (when available). Asking for a
    reference metric without a reference, an unknown id, or invalid parameters raises
    UsageError before any audio is touched.
    """
    from pydantic import ValidationError

    classes = metric_classes(registry)
    params = dict(params or {})
    chosen: list[Metric] = []
    skipped: dict[str, str] = {}
    if selection is None:
        selection = []
        for mid, cls in classes.items():
            if cls.needs_reference != reference:
                continue
            if cls.slow and not include_slow:
                skipped[mid] = cls.unavailable() or cls.slow_note()
                continue
            selection.append(mid)
    for item in selection:
        if isinstance(item, Metric):
            instance = item
        else:
            cls = classes.get(item)
            if cls is None:
                close = difflib.get_close_matches(str(item), list(classes), n=2)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise UsageError(f"unknown metric '{item}'.{hint} Known: {', '.join(classes) or 'none'} "
                                 "(`restorekit metrics --list` describes them)")
            try:
                instance = cls(params.pop(item, {}))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise UsageError(f"metric {item}: {where}: {first['msg']} (fields: "
                                 f"{', '.join(cls.Params.model_fields) or 'none'})") from exc
        if instance.needs_reference and not reference:
            raise UsageError(f"metric {instance.id} compares against a reference; give a reference "
                             "(REF EST, or --clean with --degrade)")
        reason = instance.unavailable()
        if reason:
            skipped[instance.id] = reason
            continue
        chosen.append(instance)
    if params:
        raise UsageError(f"--set for metric(s) not selected: {', '.join(params)}")
    return chosen, skipped


def measure(
    est: Audio,
    ref: Audio | None = None,
    metrics: Sequence[str | Metric] | None = None,
    *,
    max_delay_ms: float = 0.0,
    trim: bool = False,
    registry: Registry | None = None,
) -> Measurement:
    """Measure `est` (against `ref` when given) with `metrics` (default: all that fit, but not slow ones).

    The alignment is done once and shared by every reference metric. A metric that
    fails gives a value of None with its error; it never stops the others. est and ref
    whose lengths differ beyond the tolerance raise `LengthMismatchError` (a
    MetricError) unless `trim` is True: that is a problem of the pair, not of a metric.
    """
    chosen, skipped = resolve_metrics(metrics, reference=ref is not None, registry=registry)
    return measure_with(chosen, est, ref, max_delay_ms=max_delay_ms, trim=trim, skipped=skipped)


def measure_with(chosen: Sequence[Metric], est: Audio, ref: Audio | None, *, max_delay_ms: float = 0.0,
                 trim: bool = False, skipped: dict[str, str] | None = None,
                 on_metric: Callable[[int, Metric], None] | None = None) -> Measurement:
    """`measure` with metric instances already resolved (used by compare for every row).

    `on_metric(i, metric)` is called before the i-th metric (from 0) computes (progress).
    Raises `LengthMismatchError` as `measure` does; any other alignment problem (a silent
    reference, channels that cancel in a downmix) is the error of every reference metric.
    """
    result = Measurement(skipped=dict(skipped or {}))
    est = est.to("cpu")
    aligned, align_error = None, None
    if ref is not None and any(m.needs_reference for m in chosen):
        try:
            aligned = align(est, ref, max_delay_ms=max_delay_ms, trim=trim)
            result.notes.extend(aligned.notes)
        except LengthMismatchError:
            raise
        except RestorekitError as exc:
            align_error = f"cannot align est to ref: {exc}"
    for i, metric in enumerate(chosen):
        mv = MetricValue(metric.id, None, metric.unit, metric.higher_is_better)
        if metric.needs_reference and aligned is None:
            mv.error = align_error or f"{metric.id} compares against a reference; none was given"
            result.values.append(mv)
            continue
        if on_metric is not None:
            on_metric(i, metric)
        a, r = (aligned.est, aligned.ref) if metric.needs_reference else (est, None)
        try:
            mv.value = finite_value(metric, metric.compute(a, r))
        except Exception as exc:  # noqa: BLE001 - one broken metric must not stop the others
            mv.error = describe_failure(exc, f"metric {metric.id}")
        result.values.append(mv)
    return result
