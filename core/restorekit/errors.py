"""Exceptions for problems a user can fix; the CLI prints them without a traceback."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass


class RestorekitError(Exception):
    """An expected problem with a message that says what to do."""

    exit_code = 1


class UsageError(RestorekitError):
    """A problem with how restorekit was called (exit code 2)."""

    exit_code = 2


class DeviceError(UsageError):
    """A requested device does not exist on this machine."""


class AudioFileError(RestorekitError):
    """An input file cannot be read as audio, or an output cannot be written."""


class StageError(RestorekitError):
    """A stage cannot process the audio it was given."""


class PluginError(RestorekitError):
    """A plugin failed to load or registered something invalid."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One located problem in a pipeline definition."""

    message: str
    file: str | None = None
    line: int | None = None
    stage: str | None = None
    use: str | None = None
    key: str | None = None
    plugin: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.stage:
            use = ", ".join(filter(None, [self.use, self.plugin and f"plugin '{self.plugin}'"]))
            parts.append(f"stage '{self.stage}' ({use})" if use else f"stage '{self.stage}'")
        if self.key:
            parts.append(self.key)
        parts.append(self.message)
        return ": ".join(parts)


class PipelineError(UsageError):
    """A pipeline definition is invalid; carries every problem found, each located."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def describe_failure(exc: BaseException, where: str | None = None) -> str:
    """One line for a failure that must not stop a batch: the message of an expected error,
    "out of memory", or "internal error in WHERE: Type: message" (the traceback goes to the debug log)."""
    if isinstance(exc, RestorekitError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return ("out of GPU memory; use --device cpu, or a smaller segment_s / batch_size for the neural stage "
                f"({' '.join(str(exc).split())[:120]})")
    logging.getLogger("restorekit").debug("%s", "".join(traceback.format_exception(exc)))
    return f"internal error{f' in {where}' if where else ''}: {type(exc).__name__}: {exc}"
