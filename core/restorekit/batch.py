"""Running a pipeline over files: input discovery, output paths, per-file work and failures."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from restorekit.errors import UsageError, describe_failure
from restorekit.io import READ_EXTENSIONS, find_audio_files, is_float_file, read_audio, write_audio
from restorekit.executor import Executor  # noqa: F401 (re-exported: the contract executors subclass)
from restorekit.outdir import FileResult, FileTask, OutputDir, file_seed, output_paths  # noqa: F401 (re-exported)

log = logging.getLogger("restorekit")
DEMO_NAME = "demo"
MANIFEST_NAME = "manifest.json"
FLOAT_BITS = 32


@dataclass
class BatchReport:
    files: list[FileResult]
    device: str
    manifest_path: Path | None
    manifest_error: str | None = None  #: why the manifest could not be written (the outputs are there)
    skipped: int = 0  #: files whose outputs were already up to date
    generated: bool = False  #: the pipeline made its audio (a source stage), no input files

    @property
    def failures(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes (the relative path below OUTDIR, without suffix);
    `source` None for the one clip a pipeline starting from a source stage makes."""

    source: Path | None
    relative: Path


def collect_jobs(inputs: list[Path], exclude: Path | None = None) -> tuple[list[Job], list[FileResult]]:
    """Files as given, directories searched recursively; missing paths become failures.

    Files found in a directory below `exclude` (the output directory, when it lies inside an
    input directory) are skipped, so earlier outputs are not restored again.
    """
    jobs: list[Job] = []
    missing: list[FileResult] = []
    for item in inputs:
        if item.is_dir():
            found = find_audio_files(item, exclude)
            if not found:
                missing.append(FileResult(str(item), status="failed",
                                          error=f"no audio files ({', '.join(READ_EXTENSIONS)}) in this directory"))
            jobs += [Job(p, p.relative_to(item).with_suffix("")) for p in found]
        elif item.exists():
            jobs.append(Job(item, Path(item.stem)))
        else:
            missing.append(FileResult(str(item), status="failed", error="no such file or directory"))
    return jobs, missing


def check_output_dir(outdir: Path) -> None:
    """Create OUTDIR and prove it is writable, before any audio is processed."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=outdir, prefix=".restorekit-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {outdir}: {exc.strerror or exc}") from exc


def process_file(pipeline, task: FileTask, on_stage=None) -> FileResult:
    """Restore one file with a prepared pipeline; never raises for a per-file problem.

    A pipeline whose stages all stream reads, processes and writes the file in blocks
    (`restorekit.streaming`); any other holds it in memory, and its notes say which stage needs that.
    """
    from restorekit.runner import release_freed_memory

    result = FileResult(task.label, input_sha256=task.input_sha256)
    try:
        from restorekit.io import audio_info

        info = audio_info(task.source) if task.source else None
        reason = pipeline.whole_file_reason(info.samplerate, info.channels) if info else "unreadable"
        if reason is None:
            _stream_file(pipeline, task, result, on_stage)
        else:
            _process_whole(pipeline, task, result, on_stage)
            if info:
                result.notes.append(f"the whole file was held in memory: {reason}")
        result.status = "ok"
    except Exception as exc:  # noqa: BLE001 - keep going with the other files
        result.status, result.error = "failed", describe_failure(exc)
        log.info("%s: %s", task.label, result.error)
    finally:
        if result.status != "ok":  # a failed (or interrupted) input leaves no outputs behind, not even some
            for written in result.outputs:
                Path(written).unlink(missing_ok=True)
            result.outputs.clear()
        release_freed_memory()
    return result


def _file_bits(task: FileTask, peak) -> tuple[int, float]:
    """The output depth: 32-bit float for a float WAV that needs it to hold its level (peak() > 1)."""
    if not task.depth_is_set and task.fmt == "wav" and task.source and is_float_file(task.source):
        in_peak = peak()
        if in_peak > 1.0:  # the source needs float to hold its level: keep it float
            return FLOAT_BITS, in_peak
    return task.bits, 0.0


def _notes_after(result: FileResult, task: FileTask, file_bits: int, in_peak: float, target, peak: float) -> None:
    if file_bits != task.bits and in_peak:
        result.notes.append(f"written as {FLOAT_BITS}-bit float, not {task.bits}-bit PCM: the input is a float "
                            f"file peaking at {20 * math.log10(in_peak):+.2f} dBFS, above full scale, and "
                            "neither --bit-depth, the pipeline's bit_depth nor a dither stage sets the depth")
    if target is not None and file_bits != FLOAT_BITS and peak > 1.0:
        fix = "--bit-depth 32" if task.fmt == "wav" else "--format wav --bit-depth 32 (FLAC has no float)"
        message = (f"{Path(target).name}: peaks at {20 * math.log10(peak):+.2f} dBFS are clipped to full "
                   f"scale in {file_bits}-bit PCM; end the pipeline with dynamics.limit or use {fix}")
        result.notes.append(message)
        log.warning("%s", message)


def _process_whole(pipeline, task: FileTask, result: FileResult, on_stage) -> None:
    if not task.source:  # the pipeline makes its audio: nothing to read
        file_bits, in_peak, box = task.bits, 0.0, None
    else:
        box = [read_audio(task.source)]  # handed over: the runner frees the input after its last use
        result.input_sample_rate, result.input_channels = box[0].sample_rate, box[0].channels
        result.duration_s = round(box[0].duration_s, 6)
        file_bits, in_peak = _file_bits(task, lambda: float(box[0].samples.abs().max()))
    run_result = pipeline.run(box, seed=task.seed, on_stage=on_stage)
    result.timings_s = {k: round(v, 6) for k, v in run_result.timings.items()}
    result.notes = run_result.notes
    _notes_after(result, task, file_bits, in_peak, None, 0.0)
    names = pipeline.output_names()
    outs = [run_result.outputs[None]] if names is None else [run_result.outputs[n] for n in names]
    del run_result
    if result.duration_s is None:
        result.duration_s = round(outs[0].duration_s, 6)
    for target, out in zip(task.targets, outs):
        _notes_after(result, task, file_bits, 0.0, target, float(out.samples.abs().max()))
        write_audio(target, out, bit_depth=file_bits, format=task.fmt)
        result.outputs.append(target)
    result.output_bit_depth = file_bits


def _stream_file(pipeline, task: FileTask, result: FileResult, on_stage) -> None:
    from restorekit.io import AudioWriter
    from restorekit.streaming import open_input, run_streamed, spilling_into

    target = task.targets[0]
    writers: list[AudioWriter] = []
    Path(target).parent.mkdir(parents=True, exist_ok=True)  # spill files wait next to the output
    with spilling_into(Path(target).parent), open_input(task.source) as (source, peak):
        result.input_sample_rate, result.input_channels = source.sample_rate, source.channels
        result.duration_s = round(source.frames / source.sample_rate, 6)
        file_bits, in_peak = _file_bits(task, lambda: peak)

        def open_output(rate: int, channels: int) -> AudioWriter:
            writers.append(AudioWriter(target, rate, channels, bit_depth=file_bits, format=task.fmt))
            return writers[-1]

        try:
            timings, result.notes = run_streamed(pipeline, source, open_output, task.seed, on_stage)
            writers[0].commit()
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    result.timings_s = {k: round(v, 6) for k, v in timings.items()}
    _notes_after(result, task, file_bits, in_peak, target, writers[0].peak)
    result.outputs.append(target)
    result.output_bit_depth = file_bits


def run_batch(pipeline_ref, inputs: list[Path], outdir: Path, *, overrides=None, device=None, fmt="wav",
              bit_depth=None, seed=None, progress=True, overwrite=False, executor: Executor | None = None
              ) -> BatchReport:
    """Restore every input into OUTDIR; one failure never stops the others. Raises only for usage errors
    and `Interrupted` (SIGINT/SIGTERM), after the manifest is written.

    Files whose outputs are up to date (the manifest shows this pipeline, settings and
    restorekit version made them from an input with the same sha256) are skipped, so a rerun
    after an interruption does only the rest; an existing file the manifest does not show
    this project wrote is never replaced unless `overwrite`. One run at a time per OUTDIR.
    `executor` (from `register_executors`, e.g. worker processes or Ray) runs the files;
    None runs them here, one after the other.
    """
    from restorekit.pipeline import load_pipeline

    pipeline = load_pipeline(pipeline_ref, overrides, device=device)  # the device is given here, once
    pipeline.resolve()  # device and availability errors come before OUTDIR is made
    reason = pipeline.whole_file_reason()
    log.info("%s: %s", pipeline.name, f"each file is held in memory whole: {reason}" if reason else
             "files stream in blocks (memory does not grow with their length)")
    results: list[FileResult] = []
    jobs: list[Job] = []
    base_seed = pipeline.seed if seed is None else seed
    first = pipeline.nodes[0]
    if first.stage.source and inputs:
        raise UsageError(f"pipeline {pipeline.name} starts from the source stage '{first.id}' ({first.stage.id}), "
                         f"which makes its own audio: it takes no input files ({', '.join(map(str, inputs[:3]))}); "
                         "drop them, or use a pipeline without a source stage to restore files")
    if first.stage.source:
        name = first.stage.source_name() or pipeline.name
        jobs = [Job(None, Path(f"{name}-seed{base_seed}"))]
    elif inputs:
        jobs, results = collect_jobs(inputs, exclude=outdir)
        if not jobs:  # nothing to restore at all: a usage error, before any model loads
            raise UsageError("nothing to restore: " + "; ".join(f"{r.input}: {r.error}" for r in results))
    if executor is None:
        pipeline.prepare()  # models load (or fail: a pipeline error) before OUTDIR is touched
    elif hasattr(executor, "start"):
        executor.start()  # the workers load theirs (or fail) before OUTDIR is touched
    try:
        return _run_in(outdir, pipeline, jobs, results, inputs, fmt, bit_depth, base_seed, progress,
                       overwrite, executor)
    finally:
        if executor is not None and hasattr(executor, "close"):
            executor.close()


def _run_in(outdir, pipeline, jobs, results, inputs, fmt, bit_depth, base_seed, progress, overwrite, executor):
    check_output_dir(outdir)
    dithered = pipeline.output_bit_depth()  # the pipeline's bit_depth, else its dither stage's
    bits = bit_depth or dithered or 24
    if bit_depth and dithered and bit_depth < dithered:
        log.warning("the pipeline dithers to %d bits; --bit-depth %d rounds that without new dither. "
                    "To dither to %d bits, set the dither stage's bit_depth (e.g. --set dither.bit_depth=%d)",
                    dithered, bit_depth, bit_depth, bit_depth)
    with OutputDir(outdir, pipeline, fmt=fmt, bits=bits, seed=base_seed, overwrite=overwrite) as out:
        if not jobs:
            from restorekit_tools.demo import make_demo_clip

            demo_in = write_audio(outdir / f"{DEMO_NAME}_input.wav", make_demo_clip(), bit_depth=24)
            log.warning("no input given: restoring the built-in demo clip (%s)", demo_in)
            jobs = [Job(demo_in, Path(DEMO_NAME))]
        tasks, skipped = out.plan(jobs, results, pipeline.output_names(), base_seed, bool(bit_depth or dithered))
        device_used = pipeline.device
        if tasks:
            run = executor.run if executor is not None else _run_here
            out.progress(tasks, enabled=progress)
            run(pipeline, tasks, out.record, out.stage)
        out.finish(device_used)
        return BatchReport(out.results, device_used or "cpu", out.manifest_path, out.manifest_error, skipped,
                           generated=bool(jobs) and jobs[0].source is None)


def _run_here(pipeline, tasks: list[FileTask], record, on_stage) -> None:
    """The default executor: every file in this process, one after the other."""
    for task in tasks:
        record(process_file(pipeline, task, on_stage=on_stage))
