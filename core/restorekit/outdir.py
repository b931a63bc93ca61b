"""An output directory a batch owns while it runs: lock, stale temporaries, merged manifest, resume, signals.

One run at a time per directory (an OS lock). Files this project did not write are never
replaced without `overwrite`. The manifest merges every run's entries and is rewritten
atomically after each file and on SIGINT/SIGTERM (marked interrupted, `Interrupted` raised),
so a `kill -9` leaves a valid manifest; the next run removes the temporaries it left.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from restorekit.errors import AudioFileError, UsageError
from restorekit.hashing import sha256_file
from restorekit.io import write_failure

log = logging.getLogger("restorekit")
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".restorekit.lock"
STALE = re.compile(r"^\..+\.\w{8}\.part$|^\.manifest\.\w{8}$")  # write_audio's and the manifest's temporaries


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
    settings: str | None = None  #: which pipeline, settings and version made the outputs (resume checks it)


@dataclass(frozen=True)
class FileTask:
    """What one worker needs to restore one file (picklable, for worker processes and Ray)."""

    source: str
    relative: str
    targets: tuple[str, ...]
    seed: int
    fmt: str
    bits: int
    depth_is_set: bool
    input_sha256: str | None

    @property
    def label(self) -> str:
        """The input as the manifest names it: the file, or what a source pipeline makes (`source` empty)."""
        return self.source or generated_label(self.relative)


def generated_label(relative) -> str:
    return f"<generated: {Path(relative).as_posix()}>"


def file_seed(base_seed: int, relative: Path) -> int:
    """A seed for one file: the run seed mixed with the file's relative path.

    Each file gets its own random draws (a random degradation differs per clip), yet the
    same file in the same run always gets the same ones, whatever else is in the batch.
    """
    digest = hashlib.sha256(f"{base_seed}:".encode() + os.fsencode(relative.as_posix())).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def output_paths(job_relative: Path, outdir: Path, names: tuple[str, ...] | None, fmt: str) -> list[Path]:
    suffixes = [f".{fmt}"] if names is None else [f".{n}.{fmt}" for n in names]
    return [outdir / job_relative.parent / (job_relative.name + s) for s in suffixes]


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


class Interrupted(BaseException):
    """The run was stopped by SIGINT or SIGTERM; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, done: int, total: int, manifest: Path | None) -> None:
        self.signum, self.exit_code = signum, 128 + signum
        super().__init__(f"interrupted ({signal.Signals(signum).name}) after {done} of {total} file(s); "
                         f"run the same command again to do the rest (manifest: {manifest})")


def settings_key(pipeline, fmt: str, bits: int, seed: int) -> str:
    """A digest of what decides an output: the resolved pipeline (with overrides), format, depth, seed, version."""
    from restorekit import __version__

    spec = {k: v for k, v in (pipeline.spec or {"stages": repr(pipeline.nodes)}).items() if k != "source"}
    text = json.dumps({"pipeline": spec, "format": fmt, "bit_depth": bits, "seed": seed, "restorekit": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class OutputDir:
    """Use as a context manager around one batch run (see the module docstring)."""

    def __init__(self, path: Path, pipeline, *, fmt: str, bits: int, seed: int, overwrite: bool = False) -> None:
        self.path, self.pipeline, self.fmt, self.bits, self.seed = Path(path), pipeline, fmt, bits, seed
        self.overwrite, self.key = overwrite, settings_key(pipeline, fmt, bits, seed)
        self.manifest_path: Path = self.path / MANIFEST_NAME
        self.manifest_error: str | None = None
        self.results: list = []
        self.previous: list[dict] = []
        self.runs: list[dict] = []
        self.total = 0
        self.recorded = 0  #: files finished in this run (skipped ones not counted)
        self.status = "running"
        self.device: str | None = None
        self.enabled = False  #: progress shown (set by `progress`)
        self.seconds: dict[str, float] = {}  #: seconds of audio per input, for the progress
        self._bar = None

    # -- entering and leaving ---------------------------------------------------------------
    def __enter__(self) -> OutputDir:
        self._take_lock()
        self._remove_stale()
        self._read_manifest()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._old_term = (signal.signal(signal.SIGTERM, self._on_term)
                          if threading.current_thread() is threading.main_thread() else None)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
        if self._bar is not None:
            self._bar.close()
        try:
            if kind is not None and issubclass(kind, (KeyboardInterrupt, Interrupted)):
                self.status = "interrupted"
                self._write()
                signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
                raise Interrupted(signum, self.recorded, self.total, self.manifest_path) from None
        finally:
            Path(self._lock.name).unlink(missing_ok=True)  # still held: a waiting run re-checks the inode
            self._lock.close()

    def _take_lock(self) -> None:
        """An exclusive lock on OUTDIR/.restorekit.lock, removed at the end; a second run is refused."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            fcntl = None
        path = self.path / LOCK_NAME
        while True:
            self._lock = open(path, "a+")  # noqa: SIM115 - held for the whole run
            if fcntl is None:
                break
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock.seek(0)
                holder = self._lock.read().strip() or "another process"
                self._lock.close()
                raise UsageError(f"another restorekit run ({holder}) is writing to {self.path}; wait for it to "
                                 "finish or choose another -o") from None
            try:
                if os.stat(path).st_ino == os.fstat(self._lock.fileno()).st_ino:
                    break  # the file we locked is still the lock (its holder may have removed it meanwhile)
            except FileNotFoundError:
                pass
            self._lock.close()
        self._lock.seek(0), self._lock.truncate(), self._lock.write(f"pid {os.getpid()}"), self._lock.flush()

    def _on_term(self, signum, frame) -> None:
        raise Interrupted(signum, 0, 0, None)

    def _remove_stale(self) -> None:
        import shutil

        for p in self.path.rglob(".*"):
            if p.is_file() and STALE.match(p.name):
                p.unlink(missing_ok=True)
                log.info("removed %s, left by an interrupted run", p)
            elif p.is_dir() and p.name.startswith(".restorekit-pending-"):  # an executor's staging folder
                shutil.rmtree(p, ignore_errors=True)

    def _read_manifest(self) -> None:
        if not self.manifest_path.exists():
            return
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            ours = isinstance(data, dict) and isinstance(data.get("files"), list) and "pipeline" in data
        except (OSError, ValueError):
            ours = False
        if not ours:
            if not self.overwrite:
                raise UsageError(f"{self.manifest_path} exists and is not a restorekit manifest; it would be "
                                 "replaced: move it, choose another -o, or pass --overwrite")
            return
        self.previous = [f for f in data["files"] if isinstance(f, dict)]
        self.runs = [r for r in data.get("runs", []) if isinstance(r, dict)]

    # -- planning -----------------------------------------------------------------------
    def plan(self, jobs, failures, names, base_seed: int, depth_is_set: bool):
        """(tasks to run, count of up-to-date files skipped); refuses, before any work, to replace files
        this project did not write."""
        by_output = {o: f for f in self.previous for o in f.get("outputs") or []}
        inputs = {j.source.resolve() for j in jobs if j.source}
        root, claimed, foreign, tasks, skipped = self.path.resolve(), {}, [], [], 0
        self.results = list(failures)
        for job in jobs:
            targets = [str(t) for t in output_paths(job.relative, self.path, names, self.fmt)]
            result = FileResult(str(job.source) if job.source else generated_label(job.relative))
            try:
                for t in map(Path, targets):
                    tr = t.resolve()
                    if tr in inputs:
                        raise AudioFileError(f"refusing to write {t}: it is an input file; choose another -o")
                    if not tr.is_relative_to(root):
                        raise AudioFileError(f"refusing to write {t}: outside the output directory")
                    if tr in claimed:
                        raise AudioFileError(f"{t} is also the output of {claimed[tr]}; rename one input")
                    claimed[tr] = result.input
                digest = sha256_file(job.source) if job.source else None  # generated: the settings decide
            except (AudioFileError, OSError) as exc:
                result.status, result.error = "failed", str(exc) if isinstance(exc, AudioFileError) else f"{exc}"
                self.results.append(result)
                continue
            entries = [by_output.get(t) for t in targets]
            if all(e is not None and e.get("settings") == self.key and e.get("input_sha256") == digest
                   and e.get("status") in ("ok", "skipped") for e in entries) and all(Path(t).is_file() for t in targets):
                self.results.append(_result_from(entries[0], FileResult))  # up to date: skipped
                skipped += 1
                continue
            foreign += [t for t, e in zip(targets, entries) if e is None and Path(t).exists()]
            result.input_sha256, result.outputs = digest, list(targets)  # planned: ours if a kill leaves them
            self.results.append(result)
            tasks.append(FileTask(str(job.source or ""), job.relative.as_posix(), tuple(targets),
                                  file_seed(base_seed, job.relative), self.fmt, self.bits, depth_is_set, digest))
        if foreign and not self.overwrite:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise UsageError(f"refusing to replace {len(foreign)} file(s) this project did not write (no entry in "
                             f"{self.manifest_path.name}): {shown}; move them, choose another -o, or pass --overwrite")
        self.total = len(tasks)
        if skipped:
            log.warning("%d file(s) already up to date in %s: skipped (--overwrite redoes them)", skipped, self.path)
        self._write()
        return tasks, skipped

    # -- while it runs -------------------------------------------------------------------
    def progress(self, tasks, enabled: bool) -> None:
        """One bar over the seconds of audio on a terminal; a line per file on stderr otherwise; nothing if not enabled."""
        from restorekit.io import audio_seconds

        self.enabled = enabled
        self.seconds = {t.label: audio_seconds(t.source) for t in tasks if t.source} if enabled else {}
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            total = round(sum(self.seconds.values()), 1)  # 0 when the audio is generated: no length known ahead
            self._bar = tqdm(total=total or None, unit="s", desc="audio", leave=False, bar_format=(
                "{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]{postfix}" if total else
                "{desc}: {n:.0f} s audio [{elapsed}]{postfix}"))

    def stage(self, name: str) -> None:
        """The running stage of the current file (the executors' `on_stage` callback)."""
        if self._bar is not None:
            self._bar.set_postfix_str(name)

    def record(self, result) -> None:
        """Take one finished file: into the results, the manifest (atomically, now) and the progress."""
        for i, r in enumerate(self.results):
            if r.input == result.input and r.status == "pending" and r.input_sha256 == result.input_sha256:
                result.settings = self.key if result.status == "ok" else None
                self.results[i] = result
                self.recorded += 1
                break
        self._write()
        seconds = self.seconds.get(result.input) or result.duration_s or 0.0  # a generated clip: its length
        if self._bar is not None:
            self._bar.update(round(seconds, 1))
            self._bar.set_postfix_str(Path(result.input).name)
        elif self.enabled:
            took = sum(result.timings_s.values())
            print(f"[{self.recorded}/{self.total}] {result.status} {result.input}: {seconds:.1f} s of audio in {took:.1f} s"
                  + (f" ({result.error})" if result.error else ""), file=sys.stderr, flush=True)

    def finish(self, device: str | None) -> None:
        self.device, self.status = device, "complete"
        self._write()
        if self.manifest_error:
            log.error("%s", self.manifest_error)

    # -- the manifest ---------------------------------------------------------------------
    def _float_note(self) -> dict[str, Any]:
        """The exception to `bit_depth` when float inputs above full scale were kept float."""
        floats = [Path(r.input).name for r in self.results if r.output_bit_depth == 32 != self.bits]
        if not floats:
            return {}
        return {"float_input_bit_depth": 32,
                "bit_depth_reason": (f"{self.bits}-bit PCM by default (no --bit-depth, pipeline bit_depth or dither "
                                     f"stage sets the depth); {len(floats)} float input(s) peaking above full scale "
                                     f"written as 32-bit float so their level is not clipped: {', '.join(floats)}")}

    @functools.cached_property
    def environment(self) -> dict[str, Any]:
        """Versions and plugins, measured once per run."""
        return environment_info()

    def _write(self) -> None:
        mine = {r.input for r in self.results}
        files = [f for f in self.previous if f.get("input") not in mine] + [asdict(r) for r in self.results]
        run = {"started": self.started, "status": self.status, "settings": self.key, "files": len(self.results)}
        data = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pipeline": self.pipeline.spec or {"name": self.pipeline.name},
            "device": self.device, "status": self.status, "settings": self.key,
            "output": {"format": self.fmt, "bit_depth": self.bits, "seed": self.seed, **self._float_note()},
            "environment": self.environment, "runs": [*self.runs, run], "files": files,
        }
        try:
            fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=self.path)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.manifest_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self.manifest_error = None
        except OSError as exc:
            self.manifest_error = f"cannot write {self.manifest_path}: {write_failure(exc, self.path)}"


def _result_from(entry: dict, cls):
    names = {f.name for f in fields(cls)}
    result = cls(**{k: v for k, v in entry.items() if k in names})
    result.status = "skipped"
    return result
