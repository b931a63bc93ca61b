"""Shared pieces of the CLI commands (kept apart from cli.py so plugin command modules can import them)."""

from __future__ import annotations

import functools
import sys

import click

from restorekit.errors import RestorekitError, UsageError


def handle_errors(func):
    """Print expected errors as one clean message and exit with their code (no traceback);
    an interrupted batch exits 130 (SIGINT) or 143 (SIGTERM) after saying how to finish it."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from restorekit.outdir import Interrupted

        try:
            return func(*args, **kwargs)
        except RestorekitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (Interrupted, KeyboardInterrupt) as exc:
            click.echo(f"error: {exc or 'interrupted'}", err=True)
            sys.exit(getattr(exc, "exit_code", 130))

    return wrapper


def batch_options(func):
    """--overwrite, --workers, --executor, --address and --gpus-per-worker, for commands that run batches."""
    for option in reversed([
        click.option("--overwrite", is_flag=True,
                      help="Redo every file and replace existing outputs, also files this project did not write."),
        click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
                     help="Files restored in parallel (processes, each loading the pipeline once)."),
        click.option("--executor", default=None, metavar="NAME",
                     help="Where files run: processes (default with --workers), ray, or a plugin's."),
        click.option("--address", default=None, help="The cluster to join (ray: auto or HOST:PORT)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="GPUs each worker reserves (fractions share a GPU)."),
    ]):
        func = option(func)
    return func


def make_executor(name, workers, address, gpus_per_worker, pipeline_ref, overrides, device):
    """The registered executor asked for, or None to run the files in this process."""
    if name is None and workers <= 1:
        return None
    from restorekit.pipeline import find_pipeline
    from restorekit.plugins import get_registry

    table = get_registry().tables["executor"]
    name = name or "processes"
    if name not in table:
        raise UsageError(f"unknown executor '{name}'; known: {', '.join(table) or 'none'} (`restorekit plugins`)")
    return table[name](pipeline_ref=str(find_pipeline(pipeline_ref)), overrides=list(overrides), device=device,
                       workers=workers, address=address, gpus_per_worker=gpus_per_worker)


def report_batch(report, outdir, verb: str, quiet: bool) -> None:
    """Print each failure, the summary and a manifest problem; exit 0, or 1 when something failed."""
    for failure in report.failures:
        click.echo(f"FAILED {failure.input}: {failure.error}", err=True)
    done = len(report.files) - len(report.failures)
    skipped = f", {report.skipped} already up to date" if report.skipped else ""
    click.echo(f"{verb} {done} of {len(report.files)} file(s) into {outdir}{skipped} "
               f"(device {report.device}; manifest: {report.manifest_path})", err=quiet)
    if report.manifest_error:
        click.echo(f"error: {report.manifest_error}", err=True)
    sys.exit(1 if report.failures or report.manifest_error else 0)
