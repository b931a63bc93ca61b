"""restorekit-plugin-example: a complete third-party restorekit plugin.

restorekit imports this module through the entry point in pyproject.toml and calls the
hooks below: a stage, a pipeline shipped by name, and a command. Keep this import cheap: no torch, numpy or DSP libraries here; import
them inside `process`/`load` (restorekit loads every plugin for `restorekit --help`).
"""

from __future__ import annotations

from pathlib import Path

from restorekit.hookspecs import hookimpl

from restorekit_example.fade import Fade

__version__ = "0.1.0"
STAGES = (Fade,)
PIPELINES = (Path(__file__).parent / "pipelines" / "trim_and_fade.yaml",)  # shipped in the wheel


@hookimpl
def register_stages(register):
    """Register the example's stages with restorekit."""
    for cls in STAGES:
        register(cls)


@hookimpl
def register_pipelines(register):
    """Ship `trim_and_fade` by name: `restorekit run trim_and_fade song.wav`."""
    for path in PIPELINES:
        register(path)


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
        click.echo("pipelines:\n" + "".join(f"  {p.stem}\n" for p in PIPELINES).rstrip())
        click.echo("commands:\n  example-info")
