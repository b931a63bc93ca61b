"""`restorekit degrade`: apply a degradation preset to files, exactly as `run` applies a pipeline."""

from __future__ import annotations

from pathlib import Path

import click

from restorekit.cli_support import batch_options, make_executor, report_batch


def list_presets() -> list[tuple[str, Path, str]]:
    """(name, path, one-line description) of each shipped degradation preset."""
    from restorekit.pipeline import describe_file, named_degradations

    return [(name, path, describe_file(path)) for name, path in named_degradations().items()]


@click.command("degrade")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-p", "--preset", default=None, metavar="NAME|FILE",
              help="A shipped preset (lowres-8k, generative-mix, gaps; see --list) or a pipeline YAML file.")
@click.option("-o", "--output-dir", "outdir", type=click.Path(path_type=Path), default=Path("degraded"),
              show_default=True, help="Where outputs go; the input tree is mirrored below it.")
@click.option("--seed", type=int, default=None,
              help="Random seed (default: the preset's, else 0); each file gets its own draws from it.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.PARAM=VALUE",
              help="Override a stage parameter of the preset (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac"]), default="wav", show_default=True)
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default=None,
              help="16/24-bit PCM or 32-bit float (default: the preset's, else 24).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the preset's, else auto).")
@click.option("--list", "list_only", is_flag=True, help="List the shipped presets and exit.")
@batch_options
@click.pass_context
def degrade(ctx, inputs, preset, outdir, seed, overrides, fmt, bit_depth, device, list_only, overwrite, workers,
            executor, address, gpus_per_worker):
    """Degrade INPUTS (files or directories) with a preset, to test or train restoration.

    \b
    restorekit degrade clean/ --preset lowres-8k --seed 1 -o degraded/
    restorekit degrade song.wav --preset my_degradation.yaml

    The same seed gives the same output; each file gets its own random draws. Outputs,
    failures and OUTDIR/manifest.json behave as with `run`. Exit status: 0 all
    degraded, 1 some failed, 2 usage or preset error.
    """
    from restorekit.cli_support import handle_errors

    handle_errors(_degrade)(ctx, inputs, preset, outdir, seed, overrides, fmt, bit_depth, device, list_only,
                            overwrite, (executor, workers, address, gpus_per_worker))


def _degrade(ctx, inputs, preset, outdir, seed, overrides, fmt, bit_depth, device, list_only, overwrite, spread):
    from restorekit.errors import UsageError

    if list_only:
        rows = list_presets()
        width = max((len(name) for name, _, _ in rows), default=10)
        for name, _, desc in rows:
            click.echo(f"{name:<{width}}  {desc}")
        return
    if not preset:
        names = ", ".join(name for name, _, _ in list_presets()) or "none found"
        raise UsageError(f"give --preset NAME or a pipeline YAML file (presets: {names})")
    if not inputs:
        raise UsageError("give at least one input file or directory to degrade")

    from restorekit.batch import run_batch
    from restorekit.pipeline import find_degradation

    quiet = (ctx.obj or {}).get("quiet", False)
    path = find_degradation(preset)
    runner = make_executor(*spread, path, overrides, device)
    report = run_batch(path, list(inputs), outdir, overrides=list(overrides), device=device, fmt=fmt,
                       bit_depth=int(bit_depth) if bit_depth else None, seed=seed, progress=not quiet,
                       overwrite=overwrite, executor=runner)
    report_batch(report, outdir, f"degraded with {preset}:", quiet)
