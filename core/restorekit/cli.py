"""The `restorekit` command line. Imports stay lazy: `--help` and `plugins` never load torch."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from restorekit import __version__
from restorekit.cli_support import batch_options, handle_errors, make_executor, report_batch
from restorekit.errors import RestorekitError

log = logging.getLogger("restorekit")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


class PluginGroup(click.Group):
    """A command group that also lists the commands plugins add through `register_commands`."""

    _plugin_commands: dict[str, click.Command] | None = None

    def _plugins(self) -> dict[str, click.Command]:
        if self._plugin_commands is None:
            from restorekit.plugins import get_registry

            try:
                registry = get_registry()
            except RestorekitError as exc:  # RESTOREKIT_STRICT_PLUGINS=1 and a plugin failed
                click.echo(f"error: {exc}", err=True)
                sys.exit(exc.exit_code)
            self._plugin_commands = {}
            impls = {impl.plugin_name: impl for impl in registry.manager.hook.register_commands.get_hookimpls()}
            owners: dict[str, str] = {}
            for info in registry.plugins:  # in load order, built-ins first: the first name wins, as for ids
                if info.name not in impls:  # (popped once used: a duplicate entry point name is skipped)
                    continue
                group = click.Group()
                try:
                    impls.pop(info.name).function(cli=group)
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
                    log.warning("plugin '%s' failed to add its commands: %s", info.name, exc)
                for name, command in group.commands.items():
                    holder = "restorekit itself" if name in self.commands else owners.get(name)
                    if holder:
                        message = f"command '{name}' is already provided by {holder}; this one was refused (rename it)"
                        info.refused.append(message)
                        log.warning("plugin '%s' (%s): %s", info.name, info.origin(), message)
                        continue
                    owners[name] = f"plugin '{info.name}'"
                    self._plugin_commands[name] = command
        return self._plugin_commands

    def list_commands(self, ctx):
        return sorted({*self.commands, *self._plugins()})

    def get_command(self, ctx, name):
        return self.commands.get(name) or self._plugins().get(name)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="restorekit")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Restore audio, first of all the output of text-to-music models.

    \b
    restorekit run zero_shot song.wav -o restored/
    restorekit run pipelines/dsp_chain.yaml music/ --set gate.prop_decrease=0.6
    restorekit stages denoise.spectral_gate
    """
    _setup_logging(verbose, quiet)
    ctx.obj = {"verbose": verbose, "quiet": quiet}


@cli.command()
@click.argument("pipeline")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", "outdir", type=click.Path(path_type=Path), default=Path("restored"),
              show_default=True, help="Where outputs go; the input tree is mirrored below it.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.PARAM=VALUE",
              help="Override a stage parameter (repeatable).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the pipeline's, else auto).")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac"]), default="wav", show_default=True)
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default=None,
              help="16/24-bit PCM or 32-bit float (default: the pipeline's, else 24).")
@click.option("--seed", type=int, default=None, help="Random seed (default: the pipeline's, else 0).")
@batch_options
@click.pass_context
@handle_errors
def run(ctx, pipeline, inputs, outdir, overrides, device, fmt, bit_depth, seed, overwrite, workers, executor,
        address, gpus_per_worker):
    """Run PIPELINE (a YAML file or a shipped name) on INPUTS (files or directories).

    With no INPUTS, restores the built-in demo clip (synthesized music, degraded the
    way text-to-music output is); a pipeline that starts from a source stage (e.g.
    generate_and_restore) takes no INPUTS and makes its own clip. A rerun into the same -o skips files that are up to
    date, so an interrupted batch resumes; files this project did not write are never
    replaced without --overwrite. Exit status: 0 all restored, 1 some failed, 2 usage or
    pipeline error, 130/143 interrupted (SIGINT/SIGTERM; the manifest says what is done).
    """
    from restorekit.batch import run_batch

    runner = make_executor(executor, workers, address, gpus_per_worker, pipeline, overrides, device)
    report = run_batch(pipeline, list(inputs), outdir, overrides=list(overrides), device=device, fmt=fmt,
                       bit_depth=int(bit_depth) if bit_depth else None, seed=seed,
                       progress=not ctx.obj["quiet"], overwrite=overwrite, executor=runner)
    report_batch(report, outdir, "made" if report.generated else "restored", ctx.obj["quiet"])


@cli.command()
@click.argument("pipeline")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.PARAM=VALUE")
@handle_errors
def validate(pipeline, overrides):
    """Check PIPELINE without touching audio: YAML, stages, parameters, graph."""
    from restorekit.pipeline import load_pipeline

    p = load_pipeline(pipeline, list(overrides))
    click.echo(f"ok: {p.spec['source']}: {len(p.nodes)} stage(s)")
    click.echo(p.describe())
    first = p.nodes[0]
    reason = p.whole_file_reason()
    click.echo(f"starts from the source stage '{first.id}' ({first.stage.id}): run it without input files"
               if first.stage.source else f"whole file in memory: {reason}" if reason else
               "streams in blocks: memory does not grow with the file's length")


@cli.command()
@handle_errors
def plugins():
    """List loaded plugins, where they come from, and what they register or their load errors."""
    from restorekit.plugins import get_registry

    registry = get_registry()
    cli._plugins()  # adds the plugins' commands, recording refused ones on their plugin
    for info in registry.plugins:
        origin = f"{info.distribution} {info.version}" if info.distribution else "unknown distribution"
        status = "FAILED" if info.error else info.provides()
        click.echo(f"{info.name}  [{origin}]  {info.target}  {status}")
        if info.error:
            click.echo(f"    error: {info.error}")
        for kind, items in info.provided.items():
            if items:
                click.echo(f"    {kind}s: " + ", ".join(items))
        for message in info.refused:
            click.echo(f"    conflict: {message}")


@cli.command()
@click.argument("stage_id", required=False)
@handle_errors
def stages(stage_id):
    """List registered stages, or describe STAGE_ID's parameters."""
    from restorekit.plugins import get_registry
    from restorekit_tools.stage_docs import describe_stage

    registry = get_registry()
    if stage_id:
        click.echo(describe_stage(registry.get(stage_id), registry.stages.owner(stage_id)))
        return
    width = max((len(s) for s in registry.stages), default=10)
    for sid in sorted(registry.stages):
        click.echo(f"{sid:<{width}}  {registry.stages[sid].summary}")


@cli.command()
def pipelines():
    """List the pipelines shipped with restorekit (usable by name with `run`)."""
    from restorekit.pipeline import describe_file, named_pipelines

    found = named_pipelines()
    width = max(map(len, found), default=12)
    for name, path in found.items():
        click.echo(f"{name:<{width}}  {describe_file(path)}")


def main() -> None:
    # torch's OpenMP threads busy-wait by default, which makes torch stages 4-100x slower
    # whenever another process shares the cores; set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as their bytes, as `ls` does
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    cli(prog_name="restorekit")


if __name__ == "__main__":  # pragma: no cover
    main()
