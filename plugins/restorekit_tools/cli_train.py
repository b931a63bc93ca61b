"""`restorekit train`: train a registered model family on clean music degraded on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("train")
@click.argument("model")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Directory or file of clean audio (repeatable); split by file into train/val/test.")
@click.option("--degrade", default=None, help="Degradation preset or pipeline file (default: the model's).")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(1))
@click.option("--steps-per-epoch", default=200, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--segment-s", default=1.0, show_default=True, type=click.FloatRange(0.05, 60))
@click.option("--val-segments", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=None, type=click.FloatRange(0, min_open=True), help="Peak learning rate.")
@click.option("--patience", default=5, show_default=True, type=click.IntRange(1), help="Early-stopping epochs.")
@click.option("--hparams", default="{}", help="Architecture hyper-parameters as JSON, e.g. '{\"channels\": 16}'.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last state.")
@click.option("--init", "init", default=None,
              help="Start from this checkpoint's weights (name or path; fine-tuning). Its architecture "
                   "hyper-parameters are used; --hparams may change the loss weights only.")
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path), help="RUN_DIR.")
@click.pass_context
def train_command(ctx, model, data, degrade, epochs, steps_per_epoch, batch_size, segment_s, val_segments,
                  lr, patience, hparams, device, seed, resume, init, out_dir):
    """Train MODEL (unet, crnn, cqs, or a plugin's; `restorekit plugins` lists them) on clean audio.

    Writes RUN_DIR/best.safetensors + best.json (the checkpoint), log.csv, loss.png,
    split.json (which files went to train/val/test) and last_state.pt (for --resume).
    """
    from restorekit.cli_support import handle_errors
    from restorekit_tools.training import get_model_spec
    from restorekit_tools.training.trainer import TrainConfig, train

    @handle_errors
    def go():
        try:
            hp = json.loads(hparams)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--hparams") from exc
        spec = get_model_spec(model)
        config = TrainConfig(model=model, data=[str(d) for d in data], out_dir=str(out_dir), degrade=degrade,
                             epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                             segment_s=segment_s, val_segments=val_segments, lr=lr, patience=patience,
                             seed=seed, device=device, hparams=hp, init=init)
        best = train(spec, config, resume=resume, progress=not (ctx.obj or {}).get("quiet"))
        click.echo(f"best checkpoint: {best}")

    go()
