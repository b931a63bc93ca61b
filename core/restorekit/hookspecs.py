"""The hooks a restorekit plugin can implement. Entry-point group: `restorekit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from pathlib import Path

    from restorekit.executor import Executor
    from restorekit.metrics import Metric
    from restorekit.stage import Stage
    from restorekit.training.spec import ModelSpec

PROJECT = "restorekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_stages(register: Callable[[type[Stage]], None]) -> None:
    """Register stage classes by calling `register(StageClass)` once for each."""


@hookspec
def register_metrics(register: Callable[[type[Metric]], None]) -> None:
    """Register metric classes by calling `register(MetricClass)` once for each."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the `restorekit` command group."""


@hookspec
def register_models(register: Callable[[type[ModelSpec]], None]) -> None:
    """Register trainable model families (for `restorekit train`) by calling `register(SpecClass)`."""


@hookspec
def register_pipelines(register: Callable[[Path], None]) -> None:
    """Ship pipelines by name: call `register(path)` for each YAML file (named by its stem)."""


@hookspec
def register_degradations(register: Callable[[Path], None]) -> None:
    """Ship degradation presets by name: call `register(path)` for each YAML file (named by its stem)."""


@hookspec
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register batch executors (worker processes, clusters) by calling `register(ExecutorClass)`."""
