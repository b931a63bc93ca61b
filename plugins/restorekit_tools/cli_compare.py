"""`restorekit compare`: degrade clean files (or take real inputs), run pipelines, measure, report.

Imports stay lazy: loading this module for `restorekit --help` does not import torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from restorekit.cli_support import handle_errors


@click.command("compare")
@click.argument("pipelines", nargs=-1)
@click.option("--clean", "clean", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Clean reference files or directories (repeatable); needs --degrade.")
@click.option("--degrade", "degrade", metavar="PRESET",
              help="How to degrade the clean files: a preset name (pipelines/degrade/) or a pipeline YAML.")
@click.option("--inputs", "inputs", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Real inputs without a reference (repeatable): reference-free metrics only.")
@click.option("--source", "source", metavar="PIPELINE",
              help="A pipeline that generates music (e.g. generate): its clips are the inputs; reference-free "
                   "metrics only. Set its parameters with --set-source STAGE.PARAM=VALUE.")
@click.option("--set-source", "source_sets", multiple=True, metavar="STAGE.PARAM=VALUE",
              help="Override a parameter of the --source pipeline, e.g. gen.prompt=\"lo-fi piano\" (repeatable).")
@click.option("--takes", type=click.IntRange(1, 10000), default=None,
              help="With --source: how many clips to generate, each with its own seed (default 1).")
@click.option("-o", "--output-dir", "outdir", type=click.Path(path_type=Path), default=Path("compare-report"),
              show_default=True, help="Where results.csv, summary.md and report.html go.")
@click.option("-m", "--metric", "metric_ids", multiple=True, metavar="ID",
              help="Measure only this metric (repeatable; default: every available metric of the mode).")
@click.option("--set", "sets", multiple=True, metavar="METRIC.PARAM=VALUE",
              help="Set a metric parameter, e.g. --set lsd_band.low_hz=8000 (repeatable).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: each pipeline's own).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Base seed; each file gets its own, for the degradation and the pipelines.")
@click.option("--against", metavar="ROW",
              help="Take the paired differences (Δ) against this row: a pipeline's name, to compare two "
                   "restorations file by file (default: degraded, input or generated).")
@click.option("--align-delay-ms", type=click.FloatRange(0, 10000), default=0.0, show_default=True,
              help="Search and remove a constant delay of each output up to this many ms before measuring.")
@click.pass_context
@handle_errors
def compare(ctx, pipelines, clean, degrade, inputs, source, source_sets, takes, outdir, metric_ids, sets, device,
            seed, against, align_delay_ms):
    """Compare restoration PIPELINES on degraded clean files, or on real inputs.

    \b
    restorekit compare zero_shot my.yaml --clean clean/ --degrade lowres-8k -o report/
    restorekit compare zero_shot --inputs generated/ -o report/
    restorekit compare zero_shot unet --source generate --takes 8 --set-source gen.prompt="jazz trio"
    restorekit compare sr my-sr.yaml --clean clean/ --degrade lowres-8k --against sr

    With --clean, each file is degraded with the preset, every pipeline restores the
    degraded audio, and every version (the degraded input itself included, as the row
    "degraded") is measured against the clean file. With --inputs, reference-free
    metrics are measured on each input (row "input") and each output. With --source,
    the pipeline generates each clip (row "generated"), which every pipeline then restores
    and the reference-free metrics measure. Writes
    results.csv (one row per file x pipeline x metric), summary.md (means, 95 %
    confidence intervals, paired differences vs the degraded input, or vs the row
    --against names) and report.html
    (spectrograms and audio players for listening A/B; open it in any browser,
    offline). Exit status: 0 all ran, 1 some runs failed, 2 usage error.
    """
    from restorekit_tools.compare.report import HTML_NAME, summary_text
    from restorekit_tools.compare.run import run_comparison
    from restorekit_tools.compare.stats import summarize
    from restorekit.errors import UsageError
    from restorekit.pipeline import load_pipeline
    from restorekit_tools.measure import parse_metric_overrides

    quiet = bool((ctx.obj or {}).get("quiet"))
    if source_sets and not source:
        raise UsageError("--set-source sets parameters of the --source pipeline; give --source too")
    if takes is not None and not source:
        raise UsageError("--takes counts the clips a --source pipeline makes; give --source too")
    source_pipe = load_pipeline(source, list(source_sets), device=device) if source else None
    run = run_comparison(list(pipelines), clean=list(clean) or None, degrade=degrade, inputs=list(inputs) or None,
                         out_dir=outdir, metrics=list(metric_ids) or None, metric_params=parse_metric_overrides(sets),
                         device=device, seed=seed, max_delay_ms=align_delay_ms, progress=not quiet,
                         source=source_pipe, takes=takes or 1, against=against)
    failed = [r for r in run.rows if not r["metric"] and r.get("error")]
    for r in failed:
        click.echo(f"FAILED {r['file']} [{r['pipeline'] or 'reading'}]: {r['error']}", err=True)
    for note in run.notes:
        click.echo(f"note: {note}", err=True)
    if not quiet:
        click.echo(summary_text(run, summarize(run.rows, run.delta_row)))
    click.echo(f"compared {len(run.pipelines)} pipeline(s) on {len(run.files)} file(s): {outdir / HTML_NAME}",
               err=quiet)
    sys.exit(1 if failed else 0)
