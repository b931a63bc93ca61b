"""The hooks a restorekit plugin can implement. Entry-point group: `restorekit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from restorekit.stage import Stage

PROJECT = "restorekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_stages(register: Callable[[type[Stage]], None]) -> None:
    """Register stage classes by calling `register(StageClass)` once for each."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the `restorekit` command group."""
