"""What LSD a band generator could reach at best: oracles that know the reference's level.

    python scripts/sr_oracle_bound.py data/heldout44-fullband --degrade lowres-8k --cutoff-hz 4000 \\
        --degrade text-to-music --cutoff-hz 16000 [--json docs/results/sr-oracle-bound.json]
    python scripts/sr_oracle_bound.py data/heldout44-fullband --degrade lowres-8k --cutoff-hz 4000 \\
        --pipeline pipelines/sr.yaml --set sr.detail=flow [--json ...]   # and where a stage's error lies

Each clean clip is degraded with the preset (seeded per file, as `restorekit compare` does);
below the cutoff every oracle keeps the degraded input, above it (STFT n_fft 2048, hop 512,
per channel) it writes the reference's power with random phase: exactly (`exact`: the
texture right, only the phase wrong), or smoothed per frame over 1/24 or 1/6 of an octave
(`smooth-1/24`, `smooth-1/6`: the level right at that resolution, the detail a random draw,
which is what a generator with a perfect envelope predictor produces). Reported: LSD over the
whole band and from the cutoff to 20 kHz (the metrics of docs/results/sr-*), mean over clips,
next to the degraded input's. No network runs here; a few seconds per clip.

With `--pipeline` (a pipeline with an `sr.flow` stage, run on the degraded clip as `restorekit
compare` runs it), the stage's error is taken apart. Its band is rebuilt above the cutoff from
the flow's own output (the same stage with `detail: flow, match_envelope_db: 0`: its detail
and phase), each 1/6-octave band scaled per frame to a level (`LEVELS`): the stage's own (the
baseline of the rows below, which also pay for being matched in the metric's STFT), the
reference's (a perfect level predictor: what remains is the flow's detail; white noise's
detail beside it), the stage's with each clip's mean error per band taken out (what remains
is the level's movement from frame to frame) or only its overall mean error (a wrong
brightness), and the reference's mean per band, held still (a perfect static spectrum
shape). Meaningful where the damage leaves the band below the cutoff as the reference has it
(`lowres-8k`, low-passes), not on `text-to-music`, whose references' top band is full of
coding holes (see the oracles).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.signal import istft, stft

from restorekit.audio import Audio
from restorekit.batch import file_seed
from restorekit.dsp import resample
from restorekit.io import read_audio
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry

N_FFT, HOP = 2048, 512
ORACLES = {"exact": 0.0, "smooth-1/24": 1 / 24, "smooth-1/6": 1 / 6}
LEVELS = ("stage level", "reference level", "reference level, noise detail", "stage level less its band bias",
          "stage level less its overall bias", "reference level, static per band")


def _neighbours(f: np.ndarray, above: np.ndarray, octaves: float) -> list[np.ndarray]:
    """For each bin of `above`, the bins of `above` within `octaves` around it (centred)."""
    return [above[(f[above] >= f[k] * 2 ** (-octaves / 2)) & (f[above] <= f[k] * 2 ** (octaves / 2))] for k in above]


def _smoothed(power: np.ndarray, near: list[np.ndarray]) -> np.ndarray:
    """(len(near), frames): the mean power over each neighbourhood."""
    return np.stack([power[n].mean(axis=0) for n in near])


def _level_db(spec: np.ndarray, near: list[np.ndarray]) -> np.ndarray:
    """(bins above, frames): the power around each bin (its neighbourhood), in dB."""
    return 10 * np.log10(_smoothed(np.abs(spec) ** 2, near) + 1e-20)


def oracle(ref: np.ndarray, deg: np.ndarray, rate: int, cutoff_hz: float, octaves: float,
           rng: np.random.Generator) -> np.ndarray:
    """(channels, frames): `deg` below the cutoff, the reference's (smoothed) power with random phase above."""
    out = np.zeros_like(ref)
    for c in range(ref.shape[0]):
        f, _, r = stft(ref[c], rate, nperseg=N_FFT, noverlap=N_FFT - HOP)
        _, _, d = stft(deg[c], rate, nperseg=N_FFT, noverlap=N_FFT - HOP)
        above = np.flatnonzero(f >= cutoff_hz)
        power = np.abs(r) ** 2
        smooth = _smoothed(power, _neighbours(f, above, octaves)) if octaves > 0 else power[above]
        d[above] = np.sqrt(smooth) * np.exp(2j * np.pi * rng.random(smooth.shape))
        out[c] = istft(d, rate, nperseg=N_FFT, noverlap=N_FFT - HOP)[1][:ref.shape[1]]
    return out




def decomposition(ref: np.ndarray, deg: np.ndarray, stage: np.ndarray, flow: np.ndarray, rate: int,
                  cutoff_hz: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """(channels, frames) per name of LEVELS: `deg` below the cutoff, above it `flow`'s STFT (white noise's
    for the noise row) with each 1/6-octave band scaled per frame to that level."""
    outs: dict[str, list[np.ndarray]] = {name: [] for name in LEVELS}
    for c in range(ref.shape[0]):
        specs = [stft(x[c], rate, nperseg=N_FFT, noverlap=N_FFT - HOP) for x in (ref, deg, stage, flow)]
        f = specs[0][0]
        r, d, s, t = (x[2] for x in specs)
        noise = stft(rng.standard_normal(ref.shape[1]), rate, nperseg=N_FFT, noverlap=N_FFT - HOP)[2]
        above = np.flatnonzero(f >= cutoff_hz)
        near = _neighbours(f, above, 1 / 6)
        lr, ls = _level_db(r, near), _level_db(s, near)
        err = lr - ls
        wanted = {
            "stage level": (ls, t),
            "reference level": (lr, t),
            "reference level, noise detail": (lr, noise),
            "stage level less its band bias": (ls + err.mean(axis=1, keepdims=True), t),
            "stage level less its overall bias": (ls + err.mean(), t),
            "reference level, static per band": (np.broadcast_to(lr.mean(axis=1, keepdims=True), lr.shape), t),
        }
        own = {id(t): _level_db(t, near), id(noise): _level_db(noise, near)}  # each detail's level, once
        for name, (level, detail) in wanted.items():
            x = d.copy()
            x[above] = detail[above] * 10 ** ((level - own[id(detail)]) / 20)
            outs[name].append(istft(x, rate, nperseg=N_FFT, noverlap=N_FFT - HOP)[1][:ref.shape[1]])
    return {name: np.stack(v) for name, v in outs.items()}


def _like(audio: Audio, ref: Audio) -> np.ndarray:
    """`audio` (at the reference's rate) as an array of the reference's channels and length."""
    x = audio.numpy()[:, :ref.frames]
    x = np.pad(x, ((0, 0), (0, ref.frames - x.shape[1])))
    return np.ascontiguousarray(np.broadcast_to(x, (ref.channels, ref.frames)), dtype=np.float32)


def _sr_stage(pipeline) -> str:
    for node in pipeline.nodes:
        if node.stage.id == "sr.flow":
            return node.id
    raise SystemExit(f"{pipeline.name}: no sr.flow stage to take apart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path)
    parser.add_argument("--degrade", action="append", required=True, help="a preset (repeatable)")
    parser.add_argument("--cutoff-hz", action="append", type=float, required=True, help="one per --degrade")
    parser.add_argument("--pipeline", help="a pipeline with an sr.flow stage: take its error apart (LEVELS)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a --pipeline parameter, as `restorekit run --set` (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if len(args.degrade) != len(args.cutoff_hz):
        parser.error("give one --cutoff-hz per --degrade")
    metrics = get_registry().metrics
    files = sorted(p for p in args.clean.iterdir() if p.suffix == ".wav")
    stage = flow = None
    if args.pipeline:
        stage = load_pipeline(args.pipeline, args.set, device="cpu")
        node = _sr_stage(stage)
        flow = load_pipeline(args.pipeline, [*args.set, f"{node}.match_envelope_db=0", f"{node}.detail=flow"],
                             device="cpu")
    report = {}
    for preset, cutoff in zip(args.degrade, args.cutoff_hz):
        damage = load_pipeline(find_degradation(preset), device="cpu")
        lsd, band = metrics["lsd"](), metrics["lsd_band"](low_hz=cutoff, high_hz=20000)
        rows: dict[str, list[tuple[float, float]]] = {"degraded": [], **{k: [] for k in ORACLES}}
        if stage is not None:
            rows.update({"stage": [], **{k: [] for k in LEVELS}})
        rng = np.random.default_rng(args.seed)
        noise_rng = np.random.default_rng(args.seed + 1)  # its own draws: the oracles' stay as without --pipeline

        def score(name: str, x: np.ndarray, ref: Audio) -> None:
            est = ref.with_samples(ref.samples.new_tensor(x))
            rows[name].append((lsd(est, ref), band(est, ref)))

        for path in files:
            ref = read_audio(path)
            damaged = damage.run(ref, seed=file_seed(args.seed, Path(path.name))).audio
            deg = resample(damaged, ref.sample_rate)
            n = min(ref.frames, deg.frames)
            ref, deg = Audio(ref.samples[:, :n], ref.sample_rate), Audio(deg.samples[:, :n], ref.sample_rate)
            if deg.channels != ref.channels:
                deg = Audio(deg.samples.expand(ref.channels, -1).contiguous(), ref.sample_rate)
            rows["degraded"].append((lsd(deg, ref), band(deg, ref)))
            for name, octaves in ORACLES.items():
                score(name, oracle(ref.numpy(), deg.numpy(), ref.sample_rate, cutoff, octaves, rng), ref)
            if stage is not None:
                out, raw = (_like(p.run(damaged).audio, ref) for p in (stage, flow))
                score("stage", out, ref)
                for name, x in decomposition(ref.numpy(), deg.numpy(), out, raw, ref.sample_rate, cutoff,
                                             noise_rng).items():
                    score(name, x, ref)
        base = np.mean(rows["degraded"], axis=0)
        report[preset] = {"cutoff_hz": cutoff, "clips": len(files)}
        print(f"{preset} (cutoff {cutoff:g} Hz, {len(files)} clips)")
        for name, values in rows.items():
            m = np.mean(values, axis=0)
            report[preset][name] = {"lsd": float(m[0]), "lsd_band": float(m[1]),
                                    "lsd_change": float(m[0] / base[0] - 1), "lsd_band_change": float(m[1] / base[1] - 1)}
            print(f"  {name:34s} LSD {m[0]:.3f} ({m[0] / base[0] - 1:+.0%})   LSD {cutoff / 1000:g}-20 kHz "
                  f"{m[1]:.3f} ({m[1] / base[1] - 1:+.0%})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
