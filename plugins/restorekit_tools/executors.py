"""Batch executors: worker processes on this machine (`--workers N`) and Ray (`--executor ray`).

Both follow `restorekit.batch.Executor`: each worker builds the pipeline once from
`pipeline_ref` and `overrides` (`load_pipeline`, then `prepare`), restores the files it is
handed with `process_file`, and sends back the `FileResult`; this process records every
result (manifest, progress) as it arrives. Only paths and small records travel between
processes, never audio: inputs and outputs must be on a file system every worker sees
(the local disk for `processes`; a shared file system such as NFS for a multi-node Ray
cluster, see docs/scaling.md). Every task carries its own seed, so results are
bit-identical to a serial run, whatever the order and the worker.

Importing this module is cheap (no torch, no ray); both are imported where they are used.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from restorekit.errors import PipelineError, UsageError, describe_failure

from restorekit.executor import Executor

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.batch import FileResult, FileTask

log = logging.getLogger("restorekit")
RAY_INSTALL = "pip install 'restorekit[ray]'"
WORKER_DIED = ("the worker process restoring it died (killed, or crashed: out of memory?); "
               "run the same command again to redo it")


# -- what every worker does -----------------------------------------------------------------------

def worker_device(resolved: str, index: int, device_count: int) -> str:
    """The device of worker `index`: plain `cuda` spreads the workers over the visible GPUs
    (worker i on cuda:{i % count}); `cpu` and an explicit `cuda:N` stay as they are."""
    if resolved == "cuda" and device_count > 1:
        return f"cuda:{index % device_count}"
    return resolved


def load_worker_pipeline(pipeline_ref: str, overrides: list[str], device: str | None, index: int = 0,
                         text: str | None = None):
    """The pipeline a worker restores with: loaded from `pipeline_ref` (or, where that path does not
    exist, as on another node of a cluster, from its YAML `text`), on its device, models loaded."""
    from restorekit.pipeline import load_pipeline, pipeline_from_text

    if text is not None and not Path(pipeline_ref).is_file():
        pipeline = pipeline_from_text(text, pipeline_ref, overrides, device=device)
    else:
        pipeline = load_pipeline(pipeline_ref, overrides, device=device)
    resolved = pipeline.resolve()
    count = 0
    if resolved == "cuda":
        import torch

        count = torch.cuda.device_count()
    pipeline.prepare(worker_device(resolved, index, count))
    return pipeline


def _threads_per_worker(workers: int) -> int:
    """Cores each worker's torch uses, so N workers do not oversubscribe the machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def _setup_worker_logging(level: int) -> None:
    """Warnings of a worker (clipping, notes) go to stderr as in the parent, prefixed with its pid."""
    logger = logging.getLogger("restorekit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(levelname)s: [worker {os.getpid()}] %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the parent dies (even by kill -9), so no orphan keeps
    writing outputs the parent's manifest will never list."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: workers exit at their next task instead
        pass


# -- outputs land in the driver ----------------------------------------------------------------------

PENDING = ".restorekit-pending-"


class Staging:
    """Workers write each output into a hidden folder next to it (same name, same file system); the
    driver moves it into place (`os.replace`, atomic) when it records the result. A worker that
    outlives its driver (a `kill -9` of the driver; Ray actors end seconds later) then leaves only
    a staged file, which the next run removes, never an output the manifest does not list (that
    the rerun would refuse to replace)."""

    def __init__(self, tasks: list[FileTask]) -> None:
        import uuid

        self.name = PENDING + uuid.uuid4().hex[:8]
        self.parents = {Path(t).parent for task in tasks for t in task.targets}
        for parent in self.parents:  # left by a killed run (one run at a time holds OUTDIR's lock)
            for old in parent.glob(PENDING + "*"):
                _remove_tree(old)

    def task(self, task: FileTask) -> FileTask:
        import dataclasses

        return dataclasses.replace(task, targets=tuple(str(Path(t).parent / self.name / Path(t).name)
                                                       for t in task.targets))

    def land(self, task: FileTask, result: FileResult) -> FileResult:
        """The result with its outputs moved from the staging folder to the task's targets."""
        result.input = task.label
        staged = [str(Path(t).parent / self.name / Path(t).name) for t in task.targets]
        # messages name the paths as a serial run would (the worker saw staged, maybe absolute, ones)
        renames = [*((os.path.abspath(a), b) for a, b in zip(staged, task.targets)), *zip(staged, task.targets),
                   *([(os.path.abspath(task.source), task.source)] if task.source else [])]
        for old, new in renames:
            if old != new:
                result.error = result.error and result.error.replace(old, new)
                result.notes = [note.replace(old, new) for note in result.notes]
        try:
            for i in range(len(result.outputs)):
                os.replace(staged[i], task.targets[i])
        except OSError as exc:
            from restorekit.io import write_failure

            for path in [*staged, *task.targets[:len(result.outputs)]]:
                Path(path).unlink(missing_ok=True)
            result.status, result.outputs = "failed", []
            result.error = f"cannot move the output into place: {write_failure(exc, Path(task.targets[0]).parent)}"
            return result
        result.outputs = list(task.targets[:len(result.outputs)])  # written in the order of the targets
        return result

    def clean(self) -> None:
        """Remove the staging folders (what is left in them was cut off)."""
        for parent in self.parents:
            _remove_tree(parent / self.name)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- processes ----------------------------------------------------------------------------------------

_WORKER: dict = {}  # per worker process: the pipeline, or why it could not be loaded


class WorkerLoadError(Exception):
    """A worker could not load the pipeline (the message is the one-line reason)."""


def _init_process(pipeline_ref, overrides, device, counter, parent_pid, log_level, threads) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    _setup_worker_logging(log_level)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER.clear()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        _WORKER["pipeline"] = load_worker_pipeline(pipeline_ref, overrides, device, index)
    except Exception as exc:  # noqa: BLE001 - reported in the parent as one line
        _WORKER["error"] = describe_failure(exc)


def _process_task(task: FileTask) -> FileResult:
    from restorekit.batch import process_file

    if "pipeline" not in _WORKER:
        raise WorkerLoadError(_WORKER.get("error", "the pipeline was not loaded"))
    return process_file(_WORKER["pipeline"], task)


def _ping() -> str | None:
    """Run in a fresh worker: None once the pipeline is loaded, else why it could not be."""
    return _WORKER.get("error") if "pipeline" not in _WORKER else None


class ProcessesExecutor(Executor):
    """`--workers N`: N processes (spawned, never forked: torch is not fork-safe), each loading the
    pipeline once; with CUDA, the workers spread over the visible GPUs.

    `start()` starts the workers and waits until each has loaded the pipeline (a pipeline that
    cannot load is one `PipelineError`); `run` calls it when the caller did not; `close()`
    ends them (`run` does, also when interrupted).
    """

    name = "processes"
    summary = "N worker processes on this machine, each loading the pipeline once"

    #: torch threads per worker (None: the cores this process may use // workers)
    threads: int | None = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._pool = None

    def start(self, files: int | None = None) -> None:
        """Start min(workers, files) workers, each loading the pipeline; return once they have."""
        import concurrent.futures as cf
        import multiprocessing

        if self._pool is not None:
            return
        n = max(1, min(self.workers, files or self.workers))
        threads = self.threads if self.threads is not None else _threads_per_worker(n)
        context = multiprocessing.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(
            n, mp_context=context, initializer=_init_process,
            initargs=(self.pipeline_ref, list(self.overrides), self.device, context.Value("i", 0), os.getpid(),
                      logging.getLogger("restorekit").getEffectiveLevel(), threads))
        log.info("starting %d worker process(es), %d torch thread(s) each", n, threads)
        try:
            for fut in [self._pool.submit(_ping) for _ in range(n)]:
                error = fut.result()
                if error:
                    raise PipelineError(f"a worker could not load the pipeline: {error}")
        except BaseException:
            self.close(now=True)
            raise

    def run(self, pipeline, tasks: list[FileTask], record, on_stage) -> None:
        import concurrent.futures as cf

        futures: dict = {}
        staging = Staging(tasks)
        try:
            if tasks:
                self.start(len(tasks))
                futures = {self._pool.submit(_process_task, staging.task(task)): task for task in tasks}
                for fut in cf.as_completed(futures):
                    task = futures.pop(fut)
                    record(staging.land(task, self._result(fut, task)))
        except BaseException:  # Ctrl-C, SIGTERM (Interrupted), a worker that cannot load
            self.close(now=True, futures=futures)
            staging.clean()
            raise
        self.close()
        staging.clean()

    def close(self, now: bool = False, futures=()) -> None:
        """End the workers: after their files (default), or `now`, dropping the files not started
        (a file cut off leaves no output, only a temporary the next run removes)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if now:
            _stop(pool, futures)
        else:
            pool.shutdown(wait=True)

    @staticmethod
    def _result(fut, task: FileTask) -> FileResult:
        from concurrent.futures.process import BrokenProcessPool

        from restorekit.batch import FileResult

        try:
            return fut.result()
        except WorkerLoadError as exc:  # a worker that started late and could not load
            raise PipelineError(f"a worker could not load the pipeline: {exc}") from None
        except BrokenProcessPool:
            return FileResult(task.label, status="failed", error=WORKER_DIED, input_sha256=task.input_sha256)
        except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
            return FileResult(task.label, status="failed", error=describe_failure(exc),
                              input_sha256=task.input_sha256)


def _stop(pool, futures) -> None:
    """Stop now: drop the files not started, end the workers (a file cut off leaves no output,
    only a temporary the next run removes)."""
    for fut in list(futures):
        fut.cancel()
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 5
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()


# -- ray ----------------------------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


class RayWorker:
    """One pipeline, loaded once, in a Ray actor; restores the files it is handed (paths, not audio)."""

    def __init__(self, pipeline_ref: str, overrides: list[str], device: str | None, text: str | None,
                 log_level: int, threads: int | None) -> None:
        _setup_worker_logging(log_level)
        self.pipeline, self.error = None, None
        try:
            if threads:
                import torch

                torch.set_num_threads(threads)
            # Ray shows each actor only its own GPUs (CUDA_VISIBLE_DEVICES), so `cuda` is the right one
            self.pipeline = load_worker_pipeline(pipeline_ref, overrides, device, 0, text)
        except Exception as exc:  # noqa: BLE001 - reported by the driver as one line
            self.error = describe_failure(exc)

    def ready(self) -> tuple[str | None, str]:
        """(why the pipeline could not be loaded or None, where this worker runs)."""
        import socket

        where = f"{socket.gethostname()} pid {os.getpid()} on {self.pipeline.device if self.pipeline else '-'}"
        return self.error, where

    def process(self, task: FileTask) -> FileResult:
        from restorekit.batch import process_file

        return process_file(self.pipeline, task)


class RayExecutor(Executor):
    """`--executor ray [--address ADDR] --workers N [--gpus-per-worker F]`: N Ray actors, each loading
    the pipeline once, fed one file at a time as they free up; results come back to this process.

    Without --address (and without a `ray.init` already made in this process) Ray starts a
    local cluster for the run and shuts it down after; `auto` or HOST:PORT joins a running
    one (`auto`: the one `ray start` started on this machine, or RAY_ADDRESS). `start()`, `run`
    and `close()` work as for `processes`.
    """

    name = "ray"
    summary = "Ray tasks/actors on a local or remote Ray cluster"

    #: CPUs each actor reserves (Ray's scheduling); its torch uses as many threads
    cpus_per_worker: float = 1.0
    #: torch threads per actor (None: cpus_per_worker)
    threads: int | None = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._actors: list | None = None
        self._started_ray = False

    def start(self, files: int | None = None) -> None:
        """Join or start Ray and start min(workers, files) actors; return once each has loaded the pipeline."""
        ray = import_ray()
        if self._actors is not None:
            return
        self._check_device()
        level = logging.getLogger("restorekit").getEffectiveLevel()
        if not ray.is_initialized():
            # no --address: always a Ray of our own ("local"), never a cluster that `ray start` left
            # registered on this machine (Ray's default), which may be gone and then hangs the run
            try:
                ray.init(address=self.address or "local", ignore_reinit_error=True,
                         logging_level=logging.ERROR if level >= logging.ERROR else logging.WARNING,
                         log_to_driver=True, include_dashboard=False)
            except Exception as exc:  # noqa: BLE001 - no cluster there, a refused connection, a bad token
                where = f"join the Ray cluster at {self.address}" if self.address else "start a local Ray"
                raise UsageError(f"cannot {where}: {_first_line(exc)}") from None
            self._started_ray = True
        elif self.address:
            log.info("Ray is already initialized in this process: --address %s is not used", self.address)
        self._actors = []
        try:
            n = max(1, min(self.workers, files or self.workers))
            self._check_resources(ray, n)
            threads = self.threads if self.threads is not None else max(1, int(self.cpus_per_worker))
            actor_class = ray.remote(RayWorker).options(num_cpus=self.cpus_per_worker,
                                                        num_gpus=self.gpus_per_worker or 0)
            text = _pipeline_text(self.pipeline_ref)
            ref = os.path.abspath(self.pipeline_ref)  # an actor's working directory is not ours
            self._actors = [actor_class.remote(ref, list(self.overrides), self.device, text, level,
                                               threads) for _ in range(n)]
            for error, where in self._wait_ready(ray, self._actors):
                if error:
                    raise PipelineError(f"a Ray worker ({where}) could not load the pipeline: {error}")
                log.info("ray worker ready: %s", where)
        except BaseException:
            self.close()
            raise

    def run(self, pipeline, tasks: list[FileTask], record, on_stage) -> None:
        staging = Staging(tasks)
        try:
            if tasks:
                self.start(len(tasks))
                self._dispatch(import_ray(), self._actors, tasks, record, staging)
        finally:
            self.close()
        staging.clean()  # not after an interruption: an actor may still be writing (the next run removes it)

    def close(self) -> None:
        """End the actors (a file cut off leaves no output), and Ray too when this executor started it."""
        actors, self._actors = self._actors, None
        if actors is None:
            return
        import ray

        for actor in actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # noqa: BLE001 - already gone
                log.debug("ray.kill: %s", exc)
        if self._started_ray:
            self._started_ray = False
            ray.shutdown()

    def _check_device(self) -> None:
        if self.device and self.device.startswith("cuda") and not self.gpus_per_worker:
            raise UsageError(f"--device {self.device} with the ray executor needs GPUs for its workers: pass "
                             "--gpus-per-worker (1 for a GPU each, 0.5 for two workers per GPU)")

    def _check_resources(self, ray, n: int) -> None:
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        if n * self.cpus_per_worker > cpus or n * (self.gpus_per_worker or 0) > gpus:
            log.warning("%d Ray worker(s) need %g CPU and %g GPU; the cluster has %g CPU and %g GPU: the workers "
                        "that do not fit wait for resources (lower --workers or --gpus-per-worker)", n,
                        n * self.cpus_per_worker, n * (self.gpus_per_worker or 0), cpus, gpus)
        elif gpus and not self.gpus_per_worker and self.device in (None, "auto"):
            log.warning("the Ray cluster has %g GPU(s) but --gpus-per-worker is 0: the workers run on the CPU", gpus)

    @staticmethod
    def _wait_ready(ray, actors):
        pending = {actor.ready.remote(): actor for actor in actors}
        waited = 0.0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=30.0)
            for ref in done:
                pending.pop(ref)
                yield ray.get(ref)
            if pending:
                waited += 30.0
                log.warning("waiting for %d of %d Ray worker(s) to start and load the pipeline (%.0f s so far)",
                            len(pending), len(actors), waited)

    @staticmethod
    def _dispatch(ray, actors, tasks: list[FileTask], record, staging: Staging) -> None:
        """Each actor gets one file; the next goes to whichever actor finishes first."""
        from collections import deque

        from restorekit.batch import FileResult

        queue, idle, running = deque(tasks), list(actors), {}

        def failed(task: FileTask, error: str) -> FileResult:
            return FileResult(task.label, status="failed", error=error, input_sha256=task.input_sha256)

        while queue or running:
            while idle and queue:
                actor, task = idle.pop(), queue.popleft()
                running[actor.process.remote(_absolute(staging.task(task)))] = (actor, task)
            if not running:  # every worker died: the rest cannot run
                for task in queue:
                    record(failed(task, "no Ray worker left to restore it; run the same command again"))
                return
            done, _ = ray.wait(list(running), num_returns=1)
            actor, task = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:  # the actor died (its process or node went away)
                record(failed(task, f"the Ray worker restoring it died ({_first_line(exc)}); "
                                    "run the same command again to redo it"))
                continue
            except ray.exceptions.RayError as exc:
                result = failed(task, f"Ray: {_first_line(exc)}")
            idle.append(actor)
            result = staging.land(task, result)  # into place, and the paths as given here, as a local run
            record(result)


def _absolute(task: FileTask) -> FileTask:
    """The task with absolute paths: an actor runs in another working directory, maybe on another node
    (where the shared file system must be mounted at the same path)."""
    import dataclasses

    return dataclasses.replace(task, source=os.path.abspath(task.source) if task.source else "",
                               targets=tuple(os.path.abspath(t) for t in task.targets))


def _pipeline_text(pipeline_ref: str) -> str | None:
    try:
        return Path(pipeline_ref).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
