"""Running a pipeline over files: input discovery, output paths, failures, manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restorekit.hashing import sha256_file
from restorekit.errors import AudioFileError, UsageError, describe_failure
from restorekit.io import READ_EXTENSIONS, find_audio_files, is_float_file, read_audio, write_audio

log = logging.getLogger("restorekit")
DEMO_NAME = "demo"
MANIFEST_NAME = "manifest.json"
FLOAT_BITS = 32


@dataclass
class FileResult:
    input: str
    outputs: list[str] = field(default_factory=list)
    status: str = "pending"
    error: str | None = None
    input_sha256: str | None = None
    input_sample_rate: int | None = None
    input_channels: int | None = None
    duration_s: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    output_bit_depth: int | None = None


@dataclass
class BatchReport:
    files: list[FileResult]
    device: str
    manifest_path: Path | None

    @property
    def failures(self) -> list[FileResult]:
        return [f for f in self.files if f.status != "ok"]


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes (the relative path below OUTDIR, without suffix)."""

    source: Path
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


def file_seed(base_seed: int, relative: Path) -> int:
    """A seed for one file: the run seed mixed with the file's relative path.

    Each file gets its own random draws (a random degradation differs per clip), yet the
    same file in the same run always gets the same ones, whatever else is in the batch.
    """
    digest = hashlib.sha256(f"{base_seed}:".encode() + os.fsencode(relative.as_posix())).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def check_output_dir(outdir: Path) -> None:
    """Create OUTDIR and prove it is writable, before any audio is processed."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=outdir, prefix=".restorekit-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {outdir}: {exc.strerror or exc}") from exc


def output_paths(job_relative: Path, outdir: Path, names: tuple[str, ...] | None, fmt: str) -> list[Path]:
    suffixes = [f".{fmt}"] if names is None else [f".{n}.{fmt}" for n in names]
    return [outdir / job_relative.parent / (job_relative.name + s) for s in suffixes]


def run_batch(pipeline_ref, inputs: list[Path], outdir: Path, *, overrides=None, device=None, fmt="wav",
              bit_depth=None, seed=None, progress=True) -> BatchReport:
    """Restore every input; one failure never stops the others. Raises only for usage errors."""
    from tqdm import tqdm

    from restorekit.pipeline import load_pipeline
    from restorekit.runner import release_freed_memory

    pipeline = load_pipeline(pipeline_ref, overrides, device=device)  # the device is given here, once
    pipeline.resolve()  # device and availability errors come before OUTDIR is made
    results: list[FileResult] = []
    if inputs:
        jobs, results = collect_jobs(inputs, exclude=outdir)
        if not jobs:  # nothing to restore at all: a usage error, before any model loads
            raise UsageError("nothing to restore: " + "; ".join(f"{r.input}: {r.error}" for r in results))
    check_output_dir(outdir)
    resolved_device = pipeline.prepare()
    dithered = pipeline.output_bit_depth()  # the pipeline's bit_depth, else its dither stage's
    bits = bit_depth or dithered or 24
    depth_is_set = bool(bit_depth or dithered)
    if bit_depth and dithered and bit_depth < dithered:
        log.warning("the pipeline dithers to %d bits; --bit-depth %d rounds that without new dither. "
                    "To dither to %d bits, set the dither stage's bit_depth (e.g. --set dither.bit_depth=%d)",
                    dithered, bit_depth, bit_depth, bit_depth)
    names = pipeline.output_names()
    outdir_resolved = outdir.resolve()

    if not inputs:
        from restorekit_tools.demo import make_demo_clip

        demo_in = write_audio(outdir / f"{DEMO_NAME}_input.wav", make_demo_clip(), bit_depth=24)
        log.warning("no input given: restoring the built-in demo clip (%s)", demo_in)
        jobs = [Job(demo_in, Path(DEMO_NAME))]
    base_seed = pipeline.seed if seed is None else seed
    input_paths = {j.source.resolve() for j in jobs}
    claimed: dict[Path, str] = {}
    float_inputs: list[str] = []  # float inputs above full scale, written as float (the bit-depth policy)

    # disable=None: tqdm shows the bar on a terminal only; the postfix names the running stage
    bar = tqdm(jobs, desc="files", unit="file", disable=None if progress else True, leave=False)
    for job in bar:
        result = FileResult(str(job.source))
        results.append(result)
        try:
            targets = output_paths(job.relative, outdir, names, fmt)
            for t in targets:
                tr = t.resolve()
                if tr in input_paths:
                    raise AudioFileError(f"refusing to write {t}: it is an input file; choose another -o")
                if not tr.is_relative_to(outdir_resolved):
                    raise AudioFileError(f"refusing to write {t}: outside the output directory")
                if tr in claimed:
                    raise AudioFileError(f"{t} is also the output of {claimed[tr]}; rename one input")
            for t in targets:
                claimed[t.resolve()] = str(job.source)
            result.input_sha256 = sha256_file(job.source)
            box = [read_audio(job.source)]  # handed over: the runner frees the input after its last use
            result.input_sample_rate, result.input_channels = box[0].sample_rate, box[0].channels
            result.duration_s = round(box[0].duration_s, 6)
            file_bits = bits
            if not depth_is_set and fmt == "wav" and is_float_file(job.source):
                in_peak = float(box[0].samples.abs().max())
                if in_peak > 1.0:  # the source needs float to hold its level: keep it float
                    file_bits = FLOAT_BITS
                    float_inputs.append(job.source.name)
            run_result = pipeline.run(box, seed=file_seed(base_seed, job.relative),
                                      on_stage=lambda s: bar.set_postfix_str(s, refresh=False))
            result.timings_s = {k: round(v, 6) for k, v in run_result.timings.items()}
            result.notes = run_result.notes
            if file_bits != bits:
                result.notes.append(f"written as {FLOAT_BITS}-bit float, not {bits}-bit PCM: the input is a float "
                                    f"file peaking at {20 * math.log10(in_peak):+.2f} dBFS, above full scale, "
                                    "and neither --bit-depth, the pipeline's bit_depth nor a dither stage sets "
                                    "the depth")
            outs = [run_result.outputs[None]] if names is None else [run_result.outputs[n] for n in names]
            for target, out in zip(targets, outs):
                peak = float(out.samples.abs().max())
                if file_bits != FLOAT_BITS and peak > 1.0:
                    fix = "--bit-depth 32" if fmt == "wav" else "--format wav --bit-depth 32 (FLAC has no float)"
                    message = (f"{target.name}: peaks at {20 * math.log10(peak):+.2f} dBFS are clipped to full "
                               f"scale in {file_bits}-bit PCM; end the pipeline with dynamics.limit or use {fix}")
                    result.notes.append(message)
                    log.warning("%s", message)
                write_audio(target, out, bit_depth=file_bits, format=fmt)
                result.outputs.append(str(target))
            result.output_bit_depth = file_bits
            result.status = "ok"
        except Exception as exc:  # noqa: BLE001 - keep going with the other files
            result.status, result.error = "failed", describe_failure(exc)
        if result.status != "ok":
            for written in result.outputs:  # a failed input leaves no outputs behind, not even some
                Path(written).unlink(missing_ok=True)
            result.outputs.clear()
            log.info("%s: %s", job.source, result.error)
        run_result = outs = out = box = None  # this file's audio must not live on into the next file
        release_freed_memory()
    depth = None
    if float_inputs:
        depth = {"float_input_bit_depth": FLOAT_BITS,
                 "bit_depth_reason": (f"{bits}-bit PCM by default (no --bit-depth, pipeline bit_depth or dither "
                                      f"stage sets the depth); {len(float_inputs)} float input(s) peaking above "
                                      f"full scale written as {FLOAT_BITS}-bit float so their level is not "
                                      f"clipped: {', '.join(float_inputs)}")}
    manifest = write_manifest(outdir, pipeline, resolved_device, bits, fmt, seed, results, depth)
    return BatchReport(results, resolved_device, manifest)


def environment_info() -> dict[str, Any]:
    from importlib import metadata

    import torch

    from restorekit import __version__
    from restorekit.plugins import get_registry

    versions = {}
    for name in ("torch", "numpy", "scipy", "soundfile", "soxr", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "restorekit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "cuda": torch.version.cuda,
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "error": p.error}
            for p in get_registry().plugins
        ],
    }


def write_manifest(outdir: Path, pipeline, device: str, bits: int, fmt: str, seed, results,
                   depth: dict[str, Any] | None = None) -> Path:
    """Write OUTDIR/manifest.json atomically.

    `output.bit_depth` is the run's depth; `depth` adds the float-input exception when it applied
    (`float_input_bit_depth`, `bit_depth_reason`); each file's `output_bit_depth` is what it got.
    """
    data = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline": pipeline.spec or {"name": pipeline.name, "stages": [n.stage.id for n in pipeline.nodes]},
        "device": device,
        "output": {"format": fmt, "bit_depth": bits, "seed": pipeline.seed if seed is None else seed, **(depth or {})},
        "environment": environment_info(),
        "files": [asdict(r) for r in results],
    }
    path = outdir / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=outdir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
