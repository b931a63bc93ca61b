"""Running a comparison: degrade each clean file (or take real inputs), run every pipeline, measure."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restorekit.errors import RestorekitError, UsageError, describe_failure
from restorekit_tools.compare.report import ReportAssets, write_report
from restorekit_tools.compare.stats import ROW_KEYS  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.audio import Audio
    from restorekit.metrics import Metric
    from restorekit.runner import Pipeline

log = logging.getLogger("restorekit")

DEGRADED = "degraded"
INPUT = "input"
CLEAN = "clean"
GENERATED = "generated"
RESERVED = (DEGRADED, INPUT, CLEAN, GENERATED)
BASELINE = {"reference": DEGRADED, "inputs": INPUT, "generated": GENERATED}  # each mode's unrestored row


@dataclass
class CompareRun:
    """Everything a report needs: the settings, the rows, and per-file listening material."""

    mode: str  # "reference" (clean + degrade), "inputs" or "generated" (a source pipeline)
    pipelines: list[tuple[str, Any]]  # (label, Pipeline)
    metrics: list[Metric]
    skipped_metrics: dict[str, str]
    baseline: str
    sources: list[str]
    degrade: str | None  # the degradation preset, or the source pipeline in "generated" mode
    seed: int
    device: str | None
    rows: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    against: str | None = None  # the row every Δ is taken against; None: the baseline

    @property
    def delta_row(self) -> str:
        """The row the paired differences (Δ) are taken against: `against`, else the baseline."""
        return self.against or self.baseline

    def row_labels(self) -> list[str]:
        """The rows of every file, in order: clean (reference mode), the baseline, each pipeline."""
        first = [CLEAN, DEGRADED] if self.mode == "reference" else [GENERATED if self.mode == "generated" else INPUT]
        return first + [label for label, _ in self.pipelines]


def _label_pipelines(pipelines, device: str | None) -> list[tuple[str, Pipeline]]:
    from restorekit.pipeline import load_pipeline
    from restorekit.runner import Pipeline

    if isinstance(pipelines, (str, Path, Pipeline)):
        pipelines = [pipelines]
    items = list(pipelines.items()) if isinstance(pipelines, Mapping) else [(None, p) for p in pipelines]
    out: list[tuple[str, Pipeline]] = []
    used: set[str] = set(RESERVED)
    for label, ref in items:
        pipe = ref if isinstance(ref, Pipeline) else load_pipeline(ref, device=device)
        if pipe.nodes[0].stage.source:
            raise UsageError(f"pipeline {pipe.name} starts from a source stage and restores nothing; give it as "
                             f"--source {pipe.name} to compare restorations of the clips it makes")
        label = str(label or pipe.name or "pipeline")
        base, k = label, 1
        while label in used:
            k += 1
            label = f"{base}_{k}"
        used.add(label)
        out.append((label, pipe))
    return out


def _as_paths(value) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value]


def compare(
    pipelines: Sequence[str | Path | Pipeline] | Mapping[str, str | Path | Pipeline] | str | Path | Pipeline = (),
    *,
    clean: str | Path | Sequence[str | Path] | None = None,
    degrade: str | Path | Pipeline | None = None,
    inputs: str | Path | Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    metrics: Sequence[str | Metric] | None = None,
    metric_params: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
    seed: int = 0,
    max_delay_ms: float = 0.0,
    progress: bool = False,
    source: str | Path | Pipeline | None = None,
    takes: int = 1,
    against: str | None = None,
) -> list[dict]:
    """Compare restoration pipelines; returns one row per file x pipeline x metric.

    Reference mode (`clean` + `degrade`): each clean file is degraded with the
    `degrade` preset (a name such as "lowres-8k", a YAML file, or a `Pipeline`), every
    pipeline runs on the degraded audio, and the reference metrics compare each output,
    and the degraded input itself (row "degraded"), with the clean file. Inputs mode
    (`inputs`): real material without a reference; the reference-free metrics are
    measured on the input (row "input") and on each output. Generated mode (`source`: a
    pipeline that starts from a source stage, such as `generate`): it makes `takes` clips
    (each with its own seed), every pipeline restores each, and the reference-free metrics
    are measured on the clip (row "generated") and on each output.

    `pipelines`: YAML paths or shipped names, `Pipeline` objects (built in code), or
    a mapping {label: pipeline}. `metrics`: ids or `Metric` instances (default: every
    available metric of the mode); `metric_params`: {"lsd_band": {"low_hz": 4000}}.
    Each file gets its own seed (`restorekit.batch.file_seed(seed, relative path)`),
    used for both the degradation and the pipelines. `against`: the row (a pipeline's
    label, or the baseline row) that the report's paired differences (Δ) are taken
    against; default the baseline ("degraded", "input" or "generated").

    The default metrics leave out slow ones (`Metric.slow`: ViSQOL), with a note; name
    them in `metrics` to include them. An output (or the degraded input) whose length
    differs from the clean reference's by more than max(1 %, 50 ms) is not measured
    against it: that row is a failed run naming both lengths (resampling rounding is
    well within the tolerance, and trimmed with a note).

    A row is a dict with file, pipeline, metric, value (None on failure), unit, error
    and notes. A failed run is one row with an empty metric and the error; it never
    stops the other files or pipelines. With `out_dir`, results.csv, summary.md and
    report.html (with spectrograms and audio players) are written there.
    """
    run = run_comparison(pipelines, clean=clean, degrade=degrade, inputs=inputs, out_dir=out_dir,
                         metrics=metrics, metric_params=metric_params, device=device, seed=seed,
                         max_delay_ms=max_delay_ms, progress=progress, source=source, takes=takes,
                         against=against)
    return run.rows


def run_comparison(pipelines=(), *, clean=None, degrade=None, inputs=None, out_dir=None, metrics=None,
                   metric_params=None, device=None, seed=0, max_delay_ms=0.0, progress=False,
                   source=None, takes=1, against=None) -> CompareRun:
    """`compare`, returning the whole `CompareRun` (the CLI uses this for its summary)."""
    from tqdm import tqdm

    from restorekit.batch import Job, check_output_dir, collect_jobs, file_seed
    from restorekit_tools.measure import resolve_metrics
    from restorekit.pipeline import find_degradation, load_pipeline
    from restorekit.runner import Pipeline

    # -- validate everything before touching audio -------------------------------------------
    clean_paths, input_paths = _as_paths(clean), _as_paths(inputs)
    if sum(map(bool, (clean_paths, input_paths, source is not None))) > 1:
        raise UsageError("give one of: clean files (with a degradation), inputs, or a source pipeline")
    if not clean_paths and not input_paths and source is None:
        raise UsageError("nothing to compare: give clean files with a degradation preset (--clean DIR "
                         "--degrade PRESET), real inputs without a reference (--inputs DIR), or a pipeline "
                         "that generates music (--source generate)")
    if source is not None and degrade is not None:
        raise UsageError("--degrade applies to --clean files; a source pipeline's clips are measured as made")
    if not 1 <= takes <= 10_000:
        raise UsageError(f"takes must be between 1 and 10000, got {takes}")
    if clean_paths and degrade is None:
        raise UsageError("clean files need a degradation preset to make the degraded input "
                         "(--degrade lowres-8k, or a pipeline YAML)")
    if input_paths and degrade is not None:
        raise UsageError("--degrade applies to --clean files; inputs are measured as they are")
    reference = bool(clean_paths)
    labelled = _label_pipelines(pipelines, device)
    source_pipe = _source_pipeline(source, device) if source is not None else None
    mode = "reference" if reference else "generated" if source_pipe else "inputs"
    rows_named = [BASELINE[mode]] + [label for label, _ in labelled]
    if against is not None and against not in rows_named:
        raise UsageError(f"--against {against}: no such row; the rows are {', '.join(rows_named)} (a pipeline's "
                         f"label is its name, or name_2 ... for repeats)")
    degrade_pipe, degrade_name = None, None
    if reference:
        if isinstance(degrade, Pipeline):
            degrade_pipe, degrade_name = degrade, degrade.name
        else:
            degrade_pipe = load_pipeline(find_degradation(degrade), device=device)
            degrade_name = str(degrade)
    chosen, skipped = resolve_metrics(metrics, reference=reference,
                                      params={k: dict(v) for k, v in (metric_params or {}).items()})
    if not chosen:
        raise UsageError("no metric left to measure" + (f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
                                                         if skipped else ""))
    jobs, missing = collect_jobs(clean_paths or input_paths) if source_pipe is None else ([], [])
    if source_pipe is not None:  # one job per take, named after what the source makes
        stem = source_pipe.nodes[0].stage.source_name() or source_pipe.name
        jobs = [Job(None, Path(f"{stem}-take{k}")) for k in range(1, takes + 1)]
    if not jobs:
        reasons = "; ".join(f"{m.input}: {m.error}" for m in missing)
        raise UsageError(f"no audio files to compare ({reasons})")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_output_dir(out)
    resolved = None
    for _, pipe in labelled:  # pipelines loaded here already carry `device`; given Pipeline objects get it now
        resolved = pipe.prepare(device)
    for extra in (degrade_pipe, source_pipe):
        if extra is not None:
            extra.prepare(device)

    run = CompareRun(mode, labelled, chosen, skipped, BASELINE[mode],
                     [str(p) for p in (clean_paths or input_paths)] or [f"{source_pipe.name} x {takes} take(s)"
                                                                         if source_pipe else ""],
                     degrade_name or (source_pipe.name if source_pipe else None), seed, resolved or device,
                     against=against)
    for metric_id, reason in skipped.items():
        run.notes.append(f"metric {metric_id} skipped: {reason}")
    for m in missing:
        run.rows.append(_row(m.input, "", "", error=f"cannot read: {m.error}"))
    assets = None
    if out is not None:

        assets = ReportAssets(out)
    ref_free = [m for m in chosen if not m.needs_reference]

    total = len(jobs) * (len(labelled) + 1)
    bar = tqdm(total=total, desc="compare", unit="run", disable=not progress, leave=False)
    try:
        for job in jobs:
            name = base = (job.relative.parent / job.source.name).as_posix() if job.source else job.relative.name
            k = 1
            while name in run.files:  # the same relative path under two of the given directories
                k += 1
                name = f"{base} ({k})"
            run.files.append(name)
            fseed = file_seed(seed, job.relative)
            bar.set_postfix_str(f"{name}: {'generating' if source_pipe else 'reading'}", refresh=False)
            try:
                source, notes = _read(job.source) if job.source else _generate(source_pipe, fseed)
            except Exception as exc:  # noqa: BLE001 - recorded, the other files go on
                what = str(exc) if isinstance(exc, RestorekitError) else describe_failure(exc)
                run.rows.append(_row(name, run.baseline, "", error=what if job.source else f"generation failed: {what}"))
                for label, _ in labelled if not job.source else []:
                    run.rows.append(_row(name, label, "", error="not run: the generation failed"))
                bar.update(len(labelled) + 1)
                continue
            ref = source if reference else None
            if reference:
                if ref_free:
                    _measure_rows(run, name, CLEAN, ref_free, source, None, max_delay_ms, [])
                if assets:
                    assets.add(name, CLEAN, source)
                bar.set_postfix_str(f"{name}: degrading", refresh=False)
                try:
                    result = degrade_pipe.run(source, seed=fseed)
                    given, notes = _single_output(result, "the degradation"), list(result.notes)
                except Exception as exc:  # noqa: BLE001 - recorded, the other files go on
                    run.rows.append(_row(name, DEGRADED, "", error=f"degradation failed: {describe_failure(exc)}"))
                    for label, _ in labelled:
                        run.rows.append(_row(name, label, "", error="not run: the degradation failed"))
                    bar.update(len(labelled) + 1)
                    continue
            else:
                given = source
            _measure_rows(run, name, run.baseline, chosen, given, ref, max_delay_ms, notes)
            if assets:
                assets.add(name, run.baseline, given)
            bar.update(1)
            for label, pipe in labelled:
                bar.set_postfix_str(f"{name}: {label}", refresh=False)
                try:
                    result = pipe.run(given, seed=fseed)
                    output = _single_output(result, f"pipeline {label}")
                except Exception as exc:  # noqa: BLE001 - recorded, the others go on
                    run.rows.append(_row(name, label, "", error=describe_failure(exc)))
                    if assets:
                        assets.add_failure(name, label, describe_failure(exc))
                else:
                    _measure_rows(run, name, label, chosen, output, ref, max_delay_ms, result.notes)
                    if assets:
                        assets.add(name, label, output)
                    del output, result
                bar.update(1)
            if assets:
                assets.finish_file(name)
    finally:
        bar.close()
    if out is not None:
        write_report(run, out, assets)
    return run


def _read(path: Path) -> tuple[Audio, list[str]]:
    from restorekit.io import read_audio

    return read_audio(path), []


def _generate(source_pipe: Pipeline, seed: int) -> tuple[Audio, list[str]]:
    result = source_pipe.run(None, seed=seed)
    return _single_output(result, f"the source pipeline {source_pipe.name}"), list(result.notes)


def _source_pipeline(ref, device) -> Pipeline:
    """The pipeline that makes the clips: it must start from a source stage and have one output."""
    from restorekit.pipeline import load_pipeline
    from restorekit.runner import Pipeline

    pipe = ref if isinstance(ref, Pipeline) else load_pipeline(ref, device=device)
    first = pipe.nodes[0]
    if not first.stage.source:
        raise UsageError(f"--source {pipe.name}: its first stage '{first.id}' ({first.stage.id}) is not a source "
                         "stage; give a pipeline that makes music from nothing, such as `generate`")
    if pipe.output_names() is not None:
        raise UsageError(f"--source {pipe.name} has several outputs ({', '.join(pipe.output_names())}); "
                         "compare needs one clip per take: use a source pipeline with one output (`generate`)")
    return pipe


def _single_output(result, what: str) -> Audio:
    if None not in result.outputs:
        raise UsageError(f"{what} ends in a splitting stage ({', '.join(map(str, result.outputs))}); "
                         "compare needs one output: add a mixing stage at the end")
    return result.outputs[None]


def _row(file: str, pipeline: str, metric: str, value: float | None = None, unit: str = "",
         error: str | None = None, notes: str = "") -> dict:
    return {"file": file, "pipeline": pipeline, "metric": metric, "value": value, "unit": unit,
            "error": error, "notes": notes}


def _measure_rows(run: CompareRun, name: str, label: str, chosen, est, ref, max_delay_ms, notes) -> None:
    from restorekit.metrics import LengthMismatchError
    from restorekit_tools.measure import measure_with

    try:
        m = measure_with(chosen, est, ref, max_delay_ms=max_delay_ms)
    except LengthMismatchError as exc:  # not a score of part of the audio: one failed row that says why
        what = "the degraded input" if label == DEGRADED else f"the output of {label}"
        run.rows.append(_row(name, label, "", error=(
            f"{what} is {exc.est_s:.3f} s long but the clean reference {exc.ref_s:.3f} s (more than "
            f"{1000 * exc.tolerance_s:.0f} ms apart): compare measures only outputs as long as their input"),
            notes="; ".join(notes)))
        return
    text = "; ".join([*notes, *m.notes])
    for v in m.values:
        run.rows.append(_row(name, label, v.metric, v.value, v.unit, v.error, text))
