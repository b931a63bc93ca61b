"""The executor contract: where a batch's files run when not one after the other in this process.

Executors register through the `register_executors` hook (the tooling plugin ships
`processes` and `ray`); `restorekit run --workers N` or `--executor NAME` picks one.
"""

from __future__ import annotations

from typing import ClassVar


class Executor:
    """Runs a batch's files elsewhere (processes, a cluster); register the subclass with `register_executors`.

    It rebuilds the pipeline where it runs from `pipeline_ref`, `overrides`, `device`; `run` calls
    `record(restorekit.batch.process_file(pipeline, task))` here for every task, in any order.
    Optional `start()`/`close()` load the workers before the output directory is touched and end them.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, *, pipeline_ref: str, overrides: list[str], device: str | None, workers: int = 1,
                 address: str | None = None, gpus_per_worker: float = 0.0) -> None:
        self.pipeline_ref, self.overrides, self.device = pipeline_ref, overrides, device
        self.workers, self.address, self.gpus_per_worker = workers, address, gpus_per_worker

    def run(self, pipeline, tasks: list, record, on_stage) -> None:
        raise NotImplementedError(f"{type(self).__name__}.run")


def check_executor_class(cls) -> list[str]:
    """Reasons a class is not a valid executor (empty when it is)."""
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        return [f"{cls!r} is not a subclass of restorekit.executor.Executor"]
    if not (isinstance(cls.name, str) and cls.name.replace("_", "").isalnum() and cls.name.islower()):
        return [f"{cls.__name__}.name {cls.name!r} must be a short lowercase name"]
    return [] if cls.summary and "\n" not in cls.summary else [f"{cls.__name__}.summary must be one line"]
