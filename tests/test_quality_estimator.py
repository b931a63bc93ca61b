"""Training the quality estimator (cqs) on restored clips: the recipes in pipelines/training/ and the pool size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from restorekit.cli import cli
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit_tools.training.data import Degrader

RATE = 32000
RECIPES = sorted((Path(__file__).resolve().parents[1] / "pipelines" / "training").glob("restored-*.yaml"))
DAMAGE = {"unet": "lowres-8k", "crnn": "generative-mix", "bwe-lowres": "lowres-8k", "bwe-lowpass": "sr-lowpass",
          "bwe-t2m": "text-to-music", "flow-lowres": "lowres-8k", "flow-lowpass": "sr-lowpass",
          "sr-lowres": "lowres-8k", "sr-lowpass": "sr-lowpass"}
RESTORER = {"unet": "restore.unet", "crnn": "restore.crnn", "bwe": "bwe.harmonic", "flow": "sr.flow", "sr": "sr.flow"}


def chord(seconds: float, root_hz: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * root_hz * r * k * t) / k for r in (1, 1.25, 1.5) for k in range(1, 12))
    return (0.2 * x / np.abs(x).max() + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


def describe(nodes):
    return [(n.id, n.stage.id, n.stage.params.model_dump()) for n in nodes]


def test_every_restoration_recipe_is_its_damage_preset_then_one_restorer():
    assert {p.stem.removeprefix("restored-") for p in RECIPES} == set(DAMAGE)
    for path in RECIPES:
        key = path.stem.removeprefix("restored-")
        nodes = load_pipeline(find_degradation(path), device="cpu").nodes
        damage = load_pipeline(find_degradation(DAMAGE[key]), device="cpu").nodes
        # the same stages, ids and parameters as the preset: the same damage for the same seed
        assert describe(nodes[:-1]) == describe(damage), path.name
        assert nodes[-1].id == "restore" and nodes[-1].stage.id == RESTORER[key.split("-")[0]]


def test_a_restoration_recipe_restores_the_damage_of_its_preset_for_the_same_seed():
    import torch

    from restorekit.audio import Audio
    from restorekit.dsp import resample
    from restorekit.plugins import get_registry
    from restorekit.runner import Pipeline

    clean = chord(2.0, 147, 1)
    damaged = Degrader("lowres-8k", RATE)(clean, 5)
    restored = Degrader(str(RECIPES[[p.stem for p in RECIPES].index("restored-bwe-lowres")]), RATE)(clean, 5)
    bwe = Pipeline([get_registry().stages["bwe.harmonic"](sample_rate_hz=44100)], device="cpu")
    expected = resample(bwe(Audio(torch.from_numpy(damaged[None].copy()), RATE)), RATE).numpy()[0]
    assert restored.shape == clean.shape and np.isfinite(restored).all()
    assert np.abs(restored - expected[:len(restored)]).max() < 1e-5
    assert np.abs(restored - damaged).max() > 1e-3  # the restorer did something


def test_pool_size_is_a_hyper_parameter_of_the_quality_estimator(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    for i, root in enumerate((110, 147, 196, 262)):
        sf.write(music / f"track{i}.wav", chord(3.0, root, i), RATE)
    out = tmp_path / "cqs"
    recipe = str(RECIPES[[p.stem for p in RECIPES].index("restored-bwe-lowres")])
    result = CliRunner().invoke(cli, [
        "-q", "train", "cqs", "--data", str(music), "--degrade", f"none,lowres-8k,{recipe}", "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "2", "--segment-s", "1", "--val-segments", "2",
        "--hparams", '{"channels": 2, "n_mels": 16, "target": "snr", "pool_size": 5}', "-o", str(out)])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    from restorekit import checkpoints

    pool = load_file(str(out / "pool.safetensors"))
    assert pool["inputs"].shape == (5, 1, RATE) and 1 <= pool["targets"].min() <= pool["targets"].max() <= 5
    assert checkpoints.load(out / "best.safetensors").hparams["pool_size"] == 5


def test_a_cached_pool_is_reused_only_when_made_the_same_way(tmp_path):
    """A second run into the same RUN_DIR with other degradations makes its pool again (it used to reuse any
    pool of the same size); the same command reuses it."""
    from safetensors.torch import load_file

    music = tmp_path / "music"
    music.mkdir()
    for i, root in enumerate((110, 147, 196)):
        sf.write(music / f"track{i}.wav", chord(3.0, root, i), RATE)
    out = tmp_path / "cqs"

    def train(degrade):
        result = CliRunner().invoke(cli, [
            "-q", "train", "cqs", "--data", str(music), "--degrade", degrade, "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--segment-s", "1", "--val-segments", "2",
            "--hparams", '{"channels": 2, "n_mels": 16, "target": "snr", "pool_size": 4}', "-o", str(out)])
        assert result.exit_code == 0, result.output
        return load_file(str(out / "pool.safetensors"))["inputs"]

    first = train("lowres-8k")
    assert np.array_equal(train("lowres-8k").numpy(), first.numpy())  # the same recipe: the same pairs
    assert not np.array_equal(train("none").numpy(), first.numpy())  # other degradations: made again


@pytest.mark.parametrize("checkpoint", ["cqs", "tiny"])
def test_checkpoints_without_a_pool_size_load(checkpoint):
    from restorekit_plugins.quality import load_cqs

    assert load_cqs(checkpoint) is not None


def test_the_ranking_loss_rewards_the_targets_order_and_ignores_near_ties():
    import torch

    from restorekit_plugins.quality import RANK_MIN_GAP, pairwise_rank_loss

    targets = torch.tensor([1.5, 2.5, 4.0])
    right, wrong = pairwise_rank_loss(targets.clone(), targets), pairwise_rank_loss(targets.flip(0), targets)
    assert right < 0.05 < 1.0 < wrong
    tie = torch.tensor([3.0, 3.0 + RANK_MIN_GAP / 2])  # too close to rank: no loss, whatever the prediction
    assert float(pairwise_rank_loss(torch.tensor([5.0, 1.0], requires_grad=True), tie)) == 0.0
    pred = torch.tensor([2.0, 2.0], requires_grad=True)
    pairwise_rank_loss(pred, torch.tensor([1.0, 4.0])).backward()
    assert pred.grad[0] > 0 > pred.grad[1]  # descending the loss raises the better clip's score


def test_the_quality_estimator_adds_the_ranking_loss_only_when_weighted():
    import torch
    from torch.nn import functional as F

    from restorekit_plugins.quality import CQSHparams, CQSSpec, pairwise_rank_loss

    spec = CQSSpec()
    model = spec.build(CQSHparams(channels=2, n_mels=16)).eval()
    inputs = 0.1 * torch.randn(4, 1, RATE, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with torch.no_grad():
        pred = model(inputs)
        losses = {}
        for weight in (0.0, 2.0):
            spec.hparams = CQSHparams(channels=2, n_mels=16, rank_weight=weight)
            losses[weight] = float(spec.loss(model, inputs, targets)[0])
        assert losses[0.0] == pytest.approx(float(F.smooth_l1_loss(pred, targets, beta=0.25)))
        assert losses[2.0] - losses[0.0] == pytest.approx(2.0 * float(pairwise_rank_loss(pred, targets)), rel=1e-5)


@pytest.mark.parametrize("name, snr_db", [("noisy-white", -10.0), ("noisy-pink", 0.0)])
def test_the_noisy_recipes_bury_the_music_in_noise_at_their_snr(name, snr_db):
    clean = chord(2.0, 147, 1)
    noisy = Degrader(str(RECIPES[0].parent / f"{name}.yaml"), RATE)(clean, 5)
    measured = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert abs(measured - snr_db) < 0.5, measured


def test_evaluate_cqs_compares_checkpoints_over_pooled_runs(tmp_path):
    """scripts/evaluate_cqs.py --pooled: each later checkpoint's Spearman rho minus the first's, per group, over the
    rows of several earlier runs; a group too small to rank (here: no restored clips) gives null, not a crash."""
    import json
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    files = []
    for k in range(2):
        rows = []
        for t in range(6):
            for e in range(3):
                v = float(rng.uniform(1, 5))
                rows.append({"file": f"t{t}.{e}.wav", "track": f"t{k}{t}", "version": "x", "group": "degraded",
                             "visqol": v, "cqs": {"good": v + 0.1 * float(rng.standard_normal()),
                                                  "bad": float(rng.uniform(1, 5))}})
        files.append(tmp_path / f"run{k}.json")
        files[-1].write_text(json.dumps({"summary": {"checkpoints": {"bad": {}, "good": {}}}, "rows": rows}))
    script = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_cqs.py"
    out = subprocess.run([sys.executable, str(script), "--pooled", *map(str, files), "--json", str(tmp_path / "p.json")],
                         capture_output=True, text=True, check=True)
    result = json.loads((tmp_path / "p.json").read_text())
    assert json.loads(out.stdout) == result and result["clips"] == 36
    good = result["differences"]["good"]
    assert good["restored"] is None and good["all"]["tracks"] == 12
    assert 0.5 < good["degraded"]["delta"] and 0 < good["degraded"]["ci95_track_bootstrap"][0]
