"""The training loop: AdamW, cosine or plateau schedule with warm-up, gradient clipping, early
stopping, best checkpoint (safetensors), resumable state, CSV log and loss-curve plot, fixed seed."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restorekit import checkpoints
from restorekit.device import resolve_device
from restorekit_tools.training.data import (Degrader, SegmentSource, find_audio_files, load_mono, make_pairs,
                                      split_files, write_split)
from restorekit.training.spec import ModelSpec

log = logging.getLogger("restorekit")
LOG_FIELDS = ["epoch", "step", "lr", "train_loss", "val_loss", "best_val_loss", "seconds"]


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in RUN_DIR/config.json."""

    model: str
    data: list[str]
    out_dir: str
    degrade: str | None = None
    epochs: int = 20
    steps_per_epoch: int = 200
    batch_size: int = 8
    segment_s: float = 1.0
    val_segments: int = 64
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int = 100
    grad_clip: float = 1.0
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    hparams: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1


PLATEAU_PATIENCE = 2
PLATEAU_FACTOR = 0.5


def _lr_at(step: int, total: int, warmup: int, base: float, schedule: str = "cosine") -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "plateau":
        return base
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _weight_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _next_lr_scale(schedule: str, bad_epochs: int, scale: float) -> float:
    """The plateau schedule's factor on the rate after an epoch (ReduceLROnPlateau: patience 2, factor 0.5)."""
    if schedule == "plateau" and bad_epochs and bad_epochs % PLATEAU_PATIENCE == 0:
        return scale * PLATEAU_FACTOR
    return scale


def train(spec: ModelSpec, config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train `spec` as configured; returns the path of the best checkpoint's weights."""
    from tqdm import tqdm

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "last_state.pt"
    if resume and state_path.is_file():
        saved = json.loads((out / "config.json").read_text())
        config = TrainConfig(**{**saved, "epochs": config.epochs})
    device = resolve_device(config.device)
    lr = config.lr or spec.default_lr
    wd = config.weight_decay if config.weight_decay is not None else spec.default_weight_decay
    degrade = config.degrade or spec.default_degrade
    initial = None
    if config.init and not resume:
        initial, ckpt = spec.load_trained(config.init, spec.shipped_dirs)
        hparams = spec.Hparams(**{**spec.saved_hparams(ckpt), **config.hparams})
        if _weight_shapes(spec.build(hparams)) != _weight_shapes(initial):
            raise checkpoints.CheckpointError(
                f"--init {config.init}: --hparams {config.hparams} change the architecture; "
                "only loss weights can differ from the checkpoint's")
        log.info("initialised from %s", ckpt.path)
    else:
        hparams = spec.Hparams(**config.hparams)
    spec.hparams = hparams
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    files = find_audio_files([Path(d) for d in config.data])
    splits = split_files(files, config.val_fraction, config.test_fraction)
    write_split(out / "split.json", splits)
    cache = Path(os.environ.get("RESTOREKIT_DATA_CACHE", out / "decoded"))
    segment = int(round(config.segment_s * spec.sample_rate))
    sources = {}
    for name in ("train", "val"):
        tracks = [load_mono(p, spec.sample_rate, cache) for p in splits[name]]
        sources[name] = SegmentSource(tracks, [p.name for p in splits[name]], segment)
    log.info("data: %d train, %d val, %d test files", *(len(splits[s]) for s in ("train", "val", "test")))
    degrader = Degrader(degrade, spec.sample_rate)
    val_degraded, val_clean = make_pairs(sources["val"], degrader, config.val_segments,
                                         np.random.default_rng(config.seed + 1))
    val_inputs, val_targets = spec.make_batch(val_degraded, val_clean)

    pool = _training_pool(spec, sources["train"], degrader, out, config.seed, config.batch_size)

    model = (initial if initial is not None else spec.build(hparams)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    total_steps = config.epochs * config.steps_per_epoch
    start_epoch, step, best, bad_epochs, lr_scale = 0, 0, math.inf, 0, 1.0
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, best, bad_epochs = (int(state["epoch"]), int(state["step"]),
                                               float(state["best"]), int(state["bad_epochs"]))
        lr_scale = float(state.get("lr_scale", 1.0))
        torch.set_rng_state(state["torch_rng"])
        rng = np.random.default_rng(int(state["numpy_seed"]))
        log.info("resumed at epoch %d (best val %.5f)", start_epoch, best)
    log_path = out / "log.csv"
    if not (resume and log_path.is_file()):
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)

    best_path = out / "best"
    n_params = sum(p.numel() for p in model.parameters())
    started = time.time()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        losses = []
        bar = tqdm(range(config.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for _ in bar:
            if pool is None:
                inputs, targets = spec.make_batch(*make_pairs(sources["train"], degrader, config.batch_size, rng))
            else:
                pick = torch.from_numpy(rng.integers(0, len(pool[0]), config.batch_size))
                inputs, targets = pool[0][pick], pool[1][pick]
            lr_now = lr_scale * _lr_at(step, total_steps, config.warmup_steps, lr, spec.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            loss, _ = spec.loss(model, inputs.to(device), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        val = evaluate(spec, model, val_inputs, val_targets, device, config.batch_size)
        improved = val < best
        if improved:
            best, bad_epochs = val, 0
            checkpoints.save(best_path, model.state_dict(), {
                "architecture": spec.architecture, "model": spec.name, "hparams": hparams.model_dump(),
                "sample_rate": spec.sample_rate, "parameters": n_params,
                "training": {"data": config.data, "degrade": degrade, "epoch": epoch + 1, "step": step,
                             "val_loss": val, "files": {k: len(v) for k, v in splits.items()},
                             "device": device, "host": platform.node(), "seed": config.seed,
                             "init": config.init},
            })
        else:
            bad_epochs += 1
        lr_scale = _next_lr_scale(spec.lr_schedule, bad_epochs, lr_scale)
        with open(log_path, "a", newline="") as f:
            csv.writer(f).writerow([epoch + 1, step, f"{lr_now:.3g}", f"{np.mean(losses):.6f}", f"{val:.6f}",
                                    f"{best:.6f}", f"{time.time() - started:.1f}"])
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                    "step": step, "best": best, "bad_epochs": bad_epochs, "lr_scale": lr_scale, "torch_rng": torch.get_rng_state(),
                    "numpy_seed": int(rng.integers(0, 2**31 - 1))}, state_path)
        plot_losses(log_path, out / "loss.png")
        log.info("epoch %d: train %.5f val %.5f%s", epoch + 1, np.mean(losses), val, " (best)" if improved else "")
        if bad_epochs >= config.patience:
            log.info("early stop: no improvement for %d epochs", bad_epochs)
            break
    return checkpoints._weights_path(best_path)


def _training_pool(spec: ModelSpec, source: SegmentSource, degrader: Degrader, out: Path, seed: int,
                   chunk: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For specs with `pool_size`: the fixed training pairs, made once and cached in RUN_DIR/pool.safetensors.

    The cache is reused only when it was made the same way (degradations, seed, training
    files, segment length, rate, hyper-parameters and size), never because only its size matches.
    """
    if not spec.pool_size:
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = out / "pool.safetensors"
    recipe = {"recipe": json.dumps({
        "degrade": degrader.preset, "seed": seed, "files": source.names, "segment": source.segment,
        "sample_rate": spec.sample_rate, "pool_size": spec.pool_size,
        "hparams": spec.hparams.model_dump() if spec.hparams is not None else None}, sort_keys=True, default=str)}
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            same = (f.metadata() or {}) == recipe
        if same:
            cached = load_file(str(path))
            return cached["inputs"], cached["targets"]
        log.info("training pool: %s was made another way; making it again", path)
    rng = np.random.default_rng(seed + 2)
    inputs, targets = [], []
    for start in range(0, spec.pool_size, chunk):
        count = min(chunk, spec.pool_size - start)
        x, y = spec.make_batch(*make_pairs(source, degrader, count, rng))
        inputs.append(x)
        targets.append(y)
        log.info("training pool: %d/%d pairs", start + count, spec.pool_size)
    pool = torch.cat(inputs), torch.cat(targets)
    save_file({"inputs": pool[0].contiguous(), "targets": pool[1].contiguous()}, str(path), metadata=recipe)
    return pool


def evaluate(spec: ModelSpec, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
             device: str, batch_size: int) -> float:
    """Mean loss over fixed validation pairs."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size].to(device)
            loss, _ = spec.loss(model, x, y)
            total += float(loss) * len(x)
            count += len(x)
    return total / max(count, 1)


def plot_losses(log_path: Path, png_path: Path) -> None:
    """Train and validation loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [float(r["train_loss"]) for r in rows], label="train")
    ax.plot(epochs, [float(r["val_loss"]) for r in rows], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
