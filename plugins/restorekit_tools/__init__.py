"""restorekit's tooling, built as a plugin on the same hooks a third-party package uses.

`restorekit compare`, `train`, `metrics` and `degrade`, the measuring behind them
(`measure`), comparison reports (`compare`) and the trainer (`training`). The core
(`restorekit`) keeps the contracts, registry, pipelines, runner, I/O and batch.
Command modules import nothing heavy, so `restorekit --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from restorekit.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click


@hookimpl
def register_commands(cli: click.Group) -> None:
    from restorekit_tools.cli_compare import compare
    from restorekit_tools.cli_degrade import degrade
    from restorekit_tools.cli_metrics import metrics
    from restorekit_tools.cli_train import train_command

    for command in (compare, degrade, metrics, train_command):
        cli.add_command(command)


@hookimpl
def register_executors(register) -> None:
    from restorekit_tools.executors import ProcessesExecutor, RayExecutor

    register(ProcessesExecutor)
    register(RayExecutor)
