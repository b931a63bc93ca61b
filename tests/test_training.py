"""`restorekit train`: a tiny run on synthesized music writes a usable, resumable checkpoint."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from restorekit import checkpoints
from restorekit.audio import Audio
from restorekit.cli import cli
from restorekit.plugins import get_registry
from restorekit.runner import Pipeline
from restorekit_tools.training.data import split_files

RATE = 32000


def chord(seconds: float, root_hz: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * root_hz * r * k * t) / k for r in (1, 1.25, 1.5) for k in range(1, 12))
    return (0.2 * x / np.abs(x).max() + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("music")
    for i, root in enumerate((110, 147, 196, 262)):
        sf.write(d / f"track{i}.wav", chord(3.0, root, i), RATE)
    return d


def train_args(music_dir, out, epochs, model="unet", hparams='{"channels": 2, "depth": 2}'):
    return ["-q", "train", model, "--data", str(music_dir), "--epochs", str(epochs), "--steps-per-epoch", "2",
            "--batch-size", "2", "--segment-s", "0.5", "--val-segments", "2", "--hparams", hparams,
            "--device", "cpu", "-o", str(out)]


def test_train_writes_checkpoint_logs_plot_and_resumes(music_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(music_dir, out, 2))
    assert result.exit_code == 0, result.output
    for name in ("best.safetensors", "best.json", "log.csv", "loss.png", "split.json", "last_state.pt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["val_loss"])) for r in rows)
    ckpt = checkpoints.load(out / "best.safetensors")
    assert ckpt.architecture == "unet1d" and ckpt.config["training"]["degrade"] == "lowres-8k"
    assert ckpt.hparams["channels"] == 2
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]), "a file is in both train and validation"

    result = CliRunner().invoke(cli, train_args(music_dir, out, 3) + ["--resume"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert int(rows[-1]["step"]) == 6  # continued from step 4, not restarted


def test_trained_checkpoint_runs_in_the_stage(music_dir, tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(cli, train_args(music_dir, out, 1)).exit_code == 0
    from restorekit.plugins import get_registry

    stage = get_registry().stages["restore.unet"](checkpoint=str(out / "best.safetensors"), segment_s=0.5)
    audio = Audio(torch.from_numpy(np.stack([chord(1.3, 220, 9), chord(1.3, 330, 8)])), RATE)
    y = Pipeline([stage], device="cpu")(audio)
    assert y.samples.shape == audio.samples.shape and torch.isfinite(y.samples).all()


def test_same_seed_same_weights(music_dir, tmp_path):
    for name in ("a", "b"):
        assert CliRunner().invoke(cli, train_args(music_dir, tmp_path / name, 1)).exit_code == 0
    a = checkpoints.load(tmp_path / "a" / "best.safetensors").tensors
    b = checkpoints.load(tmp_path / "b" / "best.safetensors").tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_quality_estimator_trains_on_a_scored_pool(music_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("restorekit_plugins.quality.CQSSpec.pool_size", 6)
    out = tmp_path / "cqs"
    args = train_args(music_dir, out, 1, model="cqs", hparams='{"channels": 2, "n_mels": 16, "target": "snr"}')
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    pool = load_file(str(out / "pool.safetensors"))
    assert pool["inputs"].shape[0] == 6 and pool["targets"].min() >= 1 and pool["targets"].max() <= 5
    assert checkpoints.load(out / "best.safetensors").architecture == "cqs_cnn"


def test_unknown_model_and_missing_data_are_usage_errors(tmp_path):
    result = CliRunner().invoke(cli, ["train", "unett", "--data", str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Did you mean 'unet'" in result.output
    result = CliRunner().invoke(cli, ["train", "unet", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "no such file or directory" in result.output
    assert "Traceback" not in result.output


def test_split_is_by_file_and_stable(tmp_path):
    files = [tmp_path / f"song{i}.ogg" for i in range(200)]
    a, b = split_files(files), split_files(list(reversed(files)))
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    assert 0.04 < len(a["test"]) / 200 < 0.2 and 0.04 < len(a["val"]) / 200 < 0.2


def test_init_fine_tunes_from_a_checkpoint_with_new_loss_weights(music_dir, tmp_path):
    first = tmp_path / "first"
    assert CliRunner().invoke(cli, train_args(music_dir, first, 1)).exit_code == 0
    start = checkpoints.load(first / "best.safetensors").tensors
    tuned = tmp_path / "tuned"
    args = train_args(music_dir, tuned, 1, hparams='{"sisdr_weight": 1.0}')
    result = CliRunner().invoke(cli, args + ["--init", str(first / "best.safetensors")])
    assert result.exit_code == 0, result.output
    ckpt = checkpoints.load(tuned / "best.safetensors")
    assert ckpt.hparams["channels"] == 2 and ckpt.hparams["sisdr_weight"] == 1.0  # architecture from --init
    assert ckpt.config["training"]["init"] == str(first / "best.safetensors")
    moved = max(float((ckpt.tensors[k] - start[k]).abs().max()) for k in start)
    assert 0 < moved < 0.1  # trained on from the initial weights, not from scratch

    bad = CliRunner().invoke(cli, train_args(music_dir, tmp_path / "bad", 1, hparams='{"depth": 3}')
                             + ["--init", str(first / "best.safetensors")])
    assert bad.exit_code != 0 and "change the architecture" in bad.output


def test_plateau_schedule_halves_the_rate_after_two_epochs_without_improvement():
    from restorekit_tools.training.trainer import _lr_at, _next_lr_scale

    scale, history = 1.0, []
    for bad in (0, 1, 2, 0, 1, 2, 3, 4):  # bad-epoch counts after successive epochs
        scale = _next_lr_scale("plateau", bad, scale)
        history.append(scale)
    assert history == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert _next_lr_scale("cosine", 2, 1.0) == 1.0
    assert _lr_at(50, 1000, 100, 1e-4, "plateau") == pytest.approx(0.51e-4)  # warm-up still applies
    assert _lr_at(900, 1000, 100, 1e-4, "plateau") == 1e-4
    assert _lr_at(900, 1000, 100, 1e-4, "cosine") < 1e-4


def test_crnn_trains_on_mel_features(music_dir, tmp_path):
    out = tmp_path / "crnn"
    args = train_args(music_dir, out, 2, model="crnn",
                      hparams='{"channels": 2, "gru_hidden": 4, "n_mels": 32, "mode": "direct"}')
    args[args.index("--segment-s") + 1] = "1.0"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    ckpt = checkpoints.load(out / "best.safetensors")
    assert ckpt.architecture == "crnn_mel" and ckpt.hparams["mode"] == "direct"
    assert ckpt.config["training"]["degrade"] == "generative-mix"
    stage = get_registry().stages["restore.crnn"](checkpoint=str(out / "best.safetensors"))
    stage_out = Pipeline([stage], device="cpu")(Audio(torch.from_numpy(chord(1.0, 220, 9))[None], RATE))
    assert stage_out.samples.shape == (1, RATE) and torch.isfinite(stage_out.samples).all()


def test_srflow_trains_and_its_checkpoint_generates_the_missing_band(music_dir, tmp_path):
    out = tmp_path / "srflow"
    args = train_args(music_dir, out, 2, model="srflow", hparams='{"channels": 4, "depth": 2, "max_channels": 8}')
    args[args.index("--segment-s") + 1] = "1.0"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert all(np.isfinite(float(r["val_loss"])) and float(r["val_loss"]) > 0 for r in rows)  # pairs teach something
    ckpt = checkpoints.load(out / "best.safetensors")
    assert ckpt.architecture == "flow_unet2d" and ckpt.config["training"]["degrade"] == "sr-lowpass"
    assert ckpt.config["sample_rate"] == 44100
    stage = get_registry().stages["sr.flow"](checkpoint=str(out / "best.safetensors"), cutoff_hz=4000.0)
    y = Pipeline([stage], device="cpu")(Audio(torch.from_numpy(chord(1.0, 220, 9))[None], RATE))
    assert y.sample_rate == 44100 and y.frames == 44100 and torch.isfinite(y.samples).all()


def test_inpaintflow_trains_from_an_srflow_checkpoint_and_fills_gaps(music_dir, tmp_path):
    """The two flow families share one network: --init takes srflow's weights (its sr-only settings drop)."""
    small = '{"channels": 4, "depth": 2, "max_channels": 8}'
    sr_args = train_args(music_dir, tmp_path / "srflow", 1, model="srflow", hparams=small)
    assert CliRunner().invoke(cli, sr_args).exit_code == 0
    out = tmp_path / "inpaintflow"
    args = train_args(music_dir, out, 1, model="inpaintflow", hparams="{}")
    args[args.index("--segment-s") + 1] = "1.5"
    args += ["--init", str(tmp_path / "srflow" / "best.safetensors")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert all(np.isfinite(float(r["val_loss"])) and float(r["val_loss"]) > 0 for r in rows)  # gaps to learn
    ckpt = checkpoints.load(out / "best.safetensors")
    assert ckpt.config["model"] == "inpaintflow" and ckpt.architecture == "flow_unet2d"
    assert ckpt.config["training"]["degrade"] == "dropouts" and "margin" not in ckpt.hparams
    assert ckpt.hparams["channels"] == 4
    x = chord(2.0, 220, 9)
    x[RATE // 2 + 100:RATE // 2 + 100 + RATE // 10] = 0  # a 100 ms gap
    stage = get_registry().stages["inpaint.flow"](checkpoint=str(out / "best.safetensors"))
    y = Pipeline([stage], device="cpu")(Audio(torch.from_numpy(x)[None], RATE)).numpy()[0]
    assert np.abs(y[RATE // 2 + 100:RATE // 2 + 100 + RATE // 10]).max() > 0
    assert np.array_equal(y[:RATE // 2 - 100], x[:RATE // 2 - 100])  # before the 5 ms cross-fade


def test_srenvelope_trains_and_sr_flow_uses_its_checkpoint(music_dir, tmp_path):
    """The envelope predictor trains on the same pairs as srflow; its loss falls (the chords' band above
    a random cutoff is predictable) and sr.flow takes the checkpoint, with its fine view of the edge, as
    its `envelope`."""
    out = tmp_path / "srenvelope"
    args = train_args(music_dir, out, 3, model="srenvelope",
                      hparams='{"channels": 16, "dilations": [1, 2], "edge_points": 8}')
    args[args.index("--segment-s") + 1] = "1.0"
    args[args.index("--steps-per-epoch") + 1] = "15"
    result = CliRunner().invoke(cli, args + ["--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "log.csv")))
    losses = [float(r["val_loss"]) for r in rows]
    assert all(np.isfinite(v) and v > 0 for v in losses) and losses[-1] < losses[0], losses
    ckpt = checkpoints.load(out / "best.safetensors")
    assert ckpt.architecture == "envelope_tcn" and ckpt.config["sample_rate"] == 44100
    assert ckpt.config["hparams"]["edge_points"] == 8
    stage = get_registry().stages["sr.flow"](checkpoint="tiny", envelope=str(out / "best.safetensors"),
                                             cutoff_hz=4000.0)
    y = Pipeline([stage], device="cpu")(Audio(torch.from_numpy(chord(1.0, 220, 9))[None], RATE))
    assert y.sample_rate == 44100 and torch.isfinite(y.samples).all()
