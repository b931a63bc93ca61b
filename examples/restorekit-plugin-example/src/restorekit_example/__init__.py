"""restorekit-plugin-example: a complete third-party restorekit plugin.

restorekit imports this module through the entry point in pyproject.toml and calls the
two hooks below. Keep this import cheap: no torch, numpy or DSP libraries here; import
them inside `process`/`load` (restorekit loads every plugin for `restorekit --help`).
"""

from __future__ import annotations

from restorekit.hookspecs import hookimpl

from restorekit_example.fade import Fade

__version__ = "0.1.0"
STAGES = (Fade,)


@hookimpl
def register_stages(register):
    """Register the example's stages with restorekit."""
    for cls in STAGES:
        register(cls)


@hookimpl
def register_commands(cli):
    """Add `restorekit example-info`."""
    import click

    @cli.command(name="example-info")
    def example_info():
        """Show what the example plugin adds to restorekit and where it is installed."""
        from importlib import metadata
        from pathlib import Path

        try:
            version = metadata.version("restorekit-plugin-example")
        except metadata.PackageNotFoundError:  # imported from a source tree, not installed
            version = f"{__version__} (not installed)"
        click.echo(f"restorekit-plugin-example {version} ({Path(__file__).parent})")
        click.echo("stages:")
        for cls in STAGES:
            click.echo(f"  {cls.id}  {cls.summary}")
        click.echo("commands:\n  example-info")
