"""`restorekit metrics`: measure an estimate against a reference, or alone (reference-free).

Imports stay lazy: loading this module for `restorekit --help` does not import torch.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from restorekit.cli_support import handle_errors


def _direction(hib: bool | None) -> str:
    return "higher is better" if hib else "lower is better" if hib is False else ""


def _value_text(value: float | None) -> str:
    if value is None:
        return ""
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _json_value(value: float | None):
    return value if value is None or math.isfinite(value) else None


def list_metrics(as_json: bool) -> None:
    """Print every registered metric: id, unit, whether it needs a reference, availability."""
    from restorekit.plugins import get_registry

    registry = get_registry()
    items = []
    for mid, cls in registry.metrics.items():
        missing = cls.unavailable()
        items.append({"id": mid, "unit": cls.unit, "needs_reference": cls.needs_reference,
                      "higher_is_better": cls.higher_is_better, "plugin": registry.metrics.owner(mid),
                      "available": missing is None, "unavailable_reason": missing, "summary": cls.summary,
                      "params": {k: f.default for k, f in cls.Params.model_fields.items()}})
    if as_json:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    width = max((len(i["id"]) for i in items), default=6)
    for i in items:
        kind = "ref " if i["needs_reference"] else "free"
        unit = f"[{i['unit']}]" if i["unit"] else ""
        click.echo(f"{i['id']:<{width}}  {kind}  {unit:<7} {i['summary']}")
        if i["params"]:
            click.echo(" " * (width + 2) + "      params: " + ", ".join(f"{k}={v}" for k, v in i["params"].items()))
        if not i["available"]:
            click.echo(" " * (width + 2) + f"      UNAVAILABLE: {i['unavailable_reason']}")
    for p in registry.plugins:
        if p.error:
            click.echo(f"note: plugin '{p.name}' had problems (it may provide more metrics): {p.error}", err=True)


class _Progress:
    """Progress on stderr: on a terminal, a status line per metric (erased at the end); otherwise
    one line before each slow metric, so a long wait is explained."""

    def __init__(self, total: int, seconds: float) -> None:
        self.total, self.seconds = total, seconds
        self.tty = sys.stderr.isatty()
        self.width = 0

    def __call__(self, i: int, metric) -> None:
        slow = f" (slow: {metric.cost or 'may take a while'}; {self.seconds:.1f} s of audio)" if metric.slow else ""
        if self.tty:
            text = f"measuring {metric.id} [{i + 1}/{self.total}]{slow}"
            click.echo("\r" + text.ljust(self.width), nl=False, err=True)
            self.width = len(text)
        elif metric.slow:
            click.echo(f"measuring {metric.id}{slow} ...", err=True)

    def close(self) -> None:
        if self.tty and self.width:
            click.echo("\r" + " " * self.width + "\r", nl=False, err=True)
            self.width = 0


@click.command("metrics")
@click.argument("files", nargs=-1, metavar="[REF] EST", type=click.Path(path_type=Path))
@click.option("-m", "--metric", "metric_ids", multiple=True, metavar="ID",
              help="Measure only this metric (repeatable; default: all that fit).")
@click.option("--set", "sets", multiple=True, metavar="METRIC.PARAM=VALUE",
              help="Set a metric parameter, e.g. --set lsd_band.low_hz=8000 (repeatable).")
@click.option("--align-delay-ms", type=click.FloatRange(0, 10000), default=0.0, show_default=True,
              help="Search and remove a constant delay of EST up to this many ms (cross-correlation).")
@click.option("--trim", is_flag=True,
              help="Measure the common part when EST and REF differ in length by more than max(1 %, 50 ms) "
                   "(otherwise that is an error).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--list", "list_only", is_flag=True, help="List the registered metrics and exit.")
@handle_errors
def metrics(files, metric_ids, sets, align_delay_ms, trim, as_json, list_only):
    """Measure EST against REF, or EST alone (reference-free metrics) when one file is given.

    \b
    restorekit metrics clean.wav restored.wav
    restorekit metrics restored.wav --metric bandwidth_hz --metric lufs
    restorekit metrics --list

    EST is aligned to REF first (resampled to its rate, channels matched, trimmed to
    the shorter length); the notes say what was done. Lengths that differ by more than
    max(1 % of REF, 50 ms) are an error unless --trim is given. Slow metrics (visqol)
    run only when asked for with -m. Unavailable metrics (an optional package is
    missing) are skipped with the command that installs them. Exit status: 0 every
    metric measured, 1 some failed, 2 usage error.
    """
    from restorekit.errors import UsageError

    if list_only:
        list_metrics(as_json)
        return
    if len(files) not in (1, 2):
        raise UsageError(f"give EST, or REF and EST (got {len(files)} file(s)); "
                         "`restorekit metrics --list` lists the metrics")
    from restorekit.io import read_audio
    from restorekit.metrics import LengthMismatchError
    from restorekit_tools.measure import measure_with, parse_metric_overrides, resolve_metrics

    ref_path, est_path = (None, files[0]) if len(files) == 1 else files
    chosen, skipped = resolve_metrics(list(metric_ids) or None, reference=ref_path is not None,
                                      params=parse_metric_overrides(sets))
    est = read_audio(est_path)
    ref = read_audio(ref_path) if ref_path is not None else None
    progress = _Progress(len(chosen), est.duration_s)
    try:
        result = measure_with(chosen, est, ref, max_delay_ms=align_delay_ms, trim=trim, skipped=skipped,
                              on_metric=progress)
    except LengthMismatchError as exc:
        raise UsageError(f"{est_path} is {exc.est_s:.3f} s long and {ref_path} {exc.ref_s:.3f} s: they differ "
                         f"by more than {1000 * exc.tolerance_s:.0f} ms (max(1 % of REF, 50 ms)), so a score "
                         "would describe only part of them; --trim measures the common part") from exc
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps({
            "reference": None if ref_path is None else str(ref_path), "estimate": str(est_path),
            "metrics": [{"id": v.metric, "value": _json_value(v.value), "unit": v.unit,
                         "higher_is_better": v.higher_is_better, "error": v.error} for v in result.values],
            "notes": result.notes, "skipped": result.skipped}, indent=2))
    else:
        width = max((len(v.metric) for v in result.values), default=6)
        click.echo(f"{'metric':<{width}}  {'value':>10}  {'unit':<5}")
        for v in result.values:
            if v.error:
                click.echo(f"{v.metric:<{width}}  {'error':>10}  {'':<5}  {v.error}")
            else:
                click.echo(f"{v.metric:<{width}}  {_value_text(v.value):>10}  {v.unit:<5}  "
                           f"{_direction(v.higher_is_better)}".rstrip())
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        for mid, reason in result.skipped.items():
            click.echo(f"skipped {mid}: {reason}", err=True)
    sys.exit(1 if any(v.error for v in result.values) else 0)
