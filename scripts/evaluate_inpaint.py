"""Measure the inpaint stages on held-out music with inserted gaps; write docs/results/inpaint.md.

For each excerpt and each gap length (20, 50, 100, 200, 500, 1000 ms), `--gaps` gaps are
inserted one at a time (zeroed blocks at random positions, at least 1 s from the ends,
drawn with `--seed`), and each method fills them, finding the gap itself:

  silence     the gap left as it is (the baseline)
  ar          inpaint.ar for every length (max_gap_ms raised to 2000)
  similarity  inpaint.similarity for every length (min_gap_ms lowered to 5)
  flow        inpaint.flow (the learned inpainting flow, `--checkpoint`, `--steps`) for every length
              (max_gap_ms raised to 2000)
  pipeline    pipelines/inpaint.yaml: inpaint.ar to 100 ms, then inpaint.similarity

`--methods` picks some (flow-N runs the flow with N steps, e.g. flow-1 flow-2 flow-8 for a
table over steps; flow-N-raw without the spectral-envelope match, the network's own level). `--visqol N`: ViSQOL (audio mode, 48 kHz) of the whole excerpt against the
clean one for the first gap of each length in the first N excerpts (each call takes seconds).

Inside the gap: SNR (dB; silence is exactly 0), LSD (dB; 2048-point Hann STFT, hop 512,
frames centred in the gap, power floor 1e-10 of a full-scale sine's peak bin), and the
spectrogram PSNR over the masked time-frequency region (1024-point Hann STFT, hop 256,
magnitude normalised so a full-scale sine peaks at 0 dB, log-magnitude in dB clipped to
[M - 80, M] where M is the clean excerpt's maximum, scaled to [0, 1]; PSNR = 10 log10(1 / MSE)
over the frames centred in the gap, all bins). Means with 95 % intervals from a bootstrap
over excerpts (2000 resamples; the excerpts come from few tracks, so the intervals are
optimistic). Detection: recall (inserted gap found, start within 5 ms), false detections
in the gapped excerpts and in the clean excerpts.

    python scripts/evaluate_inpaint.py --data data/heldout44-fullband --excerpts 18 --gaps 2 \\
        --out docs/results/inpaint.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

LENGTHS_MS = (20, 50, 100, 200, 500, 1000)
METHODS = ("silence", "ar", "similarity", "flow", "pipeline")
ROOT = Path(__file__).resolve().parents[1]


def stft_mag(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| (frames, bins) of mono x, centred frames, Hann, scaled so a full-scale sine's peak bin is 1."""
    from restorekit_plugins.spectral import hann, stft_blocks

    scale = 2.0 / hann(n_fft).sum()
    return np.concatenate([np.abs(b[0]) for b in stft_blocks(x[None], n_fft, hop, block_frames=1024)]) * scale


def gap_frames(a: int, b: int, hop: int, total: int) -> np.ndarray:
    frames = np.arange(-(-a // hop), (b - 1) // hop + 1)
    frames = frames[(frames >= 0) & (frames < total)]
    return frames if len(frames) else np.array([min(total - 1, (a + b) // 2 // hop)])


def metrics(ref: np.ndarray, est: np.ndarray, a: int, b: int, ref_spec: dict) -> dict:
    err = np.sum((ref[a:b] - est[a:b]) ** 2)
    snr = 10 * np.log10(np.sum(ref[a:b] ** 2) / max(err, 1e-30))
    # only the part of the spectrogram around the gap needs recomputing
    lo, hi = max(0, a - 4096), min(len(ref), b + 4096)
    out = {"snr": float(snr)}
    for key, n_fft, hop in (("lsd", 2048, 512), ("psnr", 1024, 256)):
        lo_f = lo // hop * hop
        seg = est[lo_f:hi]
        mag_e = stft_mag(seg, n_fft, hop)
        mag_r_full = ref_spec[key]
        frames = gap_frames(a, b, hop, mag_r_full.shape[0])
        mag_r = mag_r_full[frames]
        mag_e = mag_e[np.clip(frames - lo_f // hop, 0, mag_e.shape[0] - 1)]
        if key == "lsd":
            d = 10 * np.log10((mag_r ** 2 + 1e-10) / (mag_e ** 2 + 1e-10))
            out["lsd"] = float(np.mean(np.sqrt(np.mean(d ** 2, axis=1))))
        else:
            top = ref_spec["psnr_max"]
            norm_r, norm_e = (np.clip((20 * np.log10(np.maximum(m, 1e-12)) - (top - 80.0)) / 80.0, 0.0, 1.0)
                              for m in (mag_r, mag_e))
            mse = np.mean((norm_r - norm_e) ** 2)
            out["psnr"] = float(10 * np.log10(1.0 / max(mse, 1e-12)))
    return out


def synth_excerpts(count: int, rate: int = 44100, seconds: float = 8.0) -> list[tuple[str, np.ndarray]]:
    """Stand-in material when the held-out folder is missing: repetitive harmonic phrases with a noise floor."""
    out = []
    for i in range(count):
        rng = np.random.default_rng(100 + i)
        n = int(seconds * rate)
        t = np.arange(int(0.6 * rate)) / rate
        x = np.zeros(n)
        notes = rng.choice([220.0, 246.9, 261.6, 293.7, 329.6, 392.0, 440.0], size=8)
        for j, s in enumerate(range(0, n - len(t), rate // 4)):
            env = np.minimum(1, t / 0.005) * 10 ** (-3 * t / 0.5)
            x[s:s + len(t)] += 0.3 * env * sum(np.sin(2 * np.pi * notes[j % 8] * k * t + k) / k for k in range(1, 7))
        x += 10 ** (-70 / 20) * rng.standard_normal(n)
        out.append((f"synth{i}", x / np.abs(x).max() * 0.8))
    return out


def load_excerpts(folder: Path, count: int) -> tuple[list[tuple[str, np.ndarray]], int, bool]:
    import soundfile as sf

    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not files:
        return synth_excerpts(count), 44100, False
    picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round()]
    out, rate = [], None
    for f in picked:
        x, sr = sf.read(f, dtype="float64", always_2d=True)
        rate = rate or sr
        out.append((f.name, x.mean(axis=1)))  # mono: the held-out set is mono
    return out, rate, True


def make_stages(method: str, checkpoint: str, steps: int) -> list:
    from restorekit_plugins.inpaint import AR, Similarity
    from restorekit_plugins.inpaint_flow import InpaintFlow

    if method.startswith("flow"):  # flow, flow-N (N steps), flow-N-raw (no envelope match)
        parts = method.split("-")
        stage = InpaintFlow(checkpoint=checkpoint, max_gap_ms=2000, steps=int(parts[1]) if len(parts) > 1 else steps,
                            match_envelope_db=0.0 if parts[-1] == "raw" else 24.0)
        stage.place("cpu")
        return [stage]
    return {"silence": [], "ar": [AR(max_gap_ms=2000)], "similarity": [Similarity(min_gap_ms=5)],
            "pipeline": [AR(), Similarity()]}[method]


def run_method(stages: list, y: np.ndarray, rate: int):
    from restorekit.audio import Audio

    audio = Audio.from_numpy(np.ascontiguousarray(y[None], dtype=np.float32), rate)
    if not stages:
        return y
    for stage in stages:
        audio, _ = stage.run(audio, seed=0)
    return audio.numpy()[0].astype(np.float64)


def score_visqol(metric, ref: np.ndarray, est: np.ndarray, rate: int) -> float:
    from restorekit.audio import Audio

    def wrap(v):
        return Audio.from_numpy(np.ascontiguousarray(v[None], dtype=np.float32), rate)

    return float(metric(wrap(est), wrap(ref)))


def bootstrap(per_excerpt: dict[str, list[float]], rng: np.random.Generator) -> tuple[float, float, float]:
    keys = list(per_excerpt)
    means = np.array([np.mean(per_excerpt[k]) for k in keys])
    counts = np.array([len(per_excerpt[k]) for k in keys])
    sums = means * counts
    idx = rng.integers(0, len(keys), size=(2000, len(keys)))
    boot = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return float(sums.sum() / counts.sum()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def main(argv=None) -> int:
    from restorekit_plugins._gaps import detect_gaps

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "heldout44-fullband"))
    ap.add_argument("--excerpts", type=int, default=18)
    ap.add_argument("--gaps", type=int, default=2, help="gaps per excerpt and length (one at a time)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the markdown here (default: print it)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--checkpoint", default="inpaintflow", help="inpaint.flow's checkpoint")
    ap.add_argument("--steps", type=int, default=1, help="inpaint.flow's steps for the method `flow`")
    ap.add_argument("--visqol", type=int, default=0, metavar="N", help="ViSQOL in the first N excerpts")
    args = ap.parse_args(argv)
    methods = args.methods
    stages = {m: make_stages(m, args.checkpoint, args.steps) for m in methods}
    visqol = None
    if args.visqol:
        from restorekit.plugins import get_registry

        visqol = get_registry().metrics["visqol"]()

    excerpts, rate, real = load_excerpts(Path(args.data), args.excerpts)
    rng = np.random.default_rng(args.seed)
    values: dict = {}  # (method, length, metric) -> {excerpt: [values]}
    seconds: dict = {m: 0.0 for m in methods}
    audio_s = {m: 0.0 for m in methods}
    recall_hits, recall_total, false_in_gapped, false_clean = 0, 0, 0, 0
    for index, (name, x) in enumerate(excerpts):
        false_clean += len(detect_gaps(x[None], rate))
        spec = {"lsd": stft_mag(x, 2048, 512), "psnr": stft_mag(x, 1024, 256)}
        spec["psnr_max"] = float(20 * np.log10(max(spec["psnr"].max(), 1e-12)))
        for length in LENGTHS_MS:
            m = round(length * rate / 1000)
            for gap_index in range(args.gaps):
                a = int(rng.integers(rate, len(x) - rate - m))
                b = a + m
                y = x.copy()
                y[a:b] = 0.0
                found = detect_gaps(y[None], rate)
                hit = [g for g in found if abs(g.start - a) <= 0.005 * rate]
                recall_total += 1
                recall_hits += bool(hit)
                false_in_gapped += len(found) - len(hit)
                for method in methods:
                    t0 = time.perf_counter()
                    est = run_method(stages[method], y, rate)
                    seconds[method] += time.perf_counter() - t0
                    audio_s[method] += len(x) / rate
                    found_metrics = metrics(x, est, a, b, spec)
                    if visqol is not None and index < args.visqol and gap_index == 0:
                        found_metrics["visqol"] = score_visqol(visqol, x, est, rate)
                    for key, val in found_metrics.items():
                        values.setdefault((method, length, key), {}).setdefault(name, []).append(val)
        print(f"{name} done", file=sys.stderr)

    boot_rng = np.random.default_rng(12345)
    lines = ["# Gap inpainting: measured", ""]
    command = (f"python scripts/evaluate_inpaint.py --data {args.data} --excerpts {args.excerpts} --gaps {args.gaps} "
               f"--seed {args.seed} --methods {' '.join(methods)} --checkpoint {args.checkpoint} "
               f"--steps {args.steps} --visqol {args.visqol}" + (f" --out {args.out}" if args.out else ""))
    lines += [f"Command: `{command}`", ""]
    src = (f"{len(excerpts)} held-out excerpts ({', '.join(sorted({n.split('.')[0] for n, _ in excerpts}))}; "
           f"{rate} Hz, mono, 8 s each)" if real else
           f"{len(excerpts)} SYNTHESIZED excerpts (the held-out folder {args.data} was missing)")
    lines += [(f"Material: {src}. {args.gaps} gap(s) per excerpt and length, inserted one at a time as zeroed "
              f"blocks at random positions (seed {args.seed}); every method finds the gap itself "
              "(detection errors count against it)."), ""]
    lines += [("Definitions: SNR and LSD inside the gap; PSNR of the log-magnitude spectrogram over the masked "
              "region (1024-point Hann STFT, hop 256, dB clipped to the 80 dB below the clean excerpt's maximum "
              "and scaled to [0, 1], frames centred in the gap, all bins). LSD: 2048-point STFT, hop 512, power "
              "floor 1e-10. Mean [95 % bootstrap interval over excerpts]; several excerpts share a track, so the "
              "intervals are optimistic. `ar`, `similarity` and `flow` (inpaint.flow, "
              f"{args.steps} steps unless named flow-N) are forced onto every length; `pipeline` is "
              "pipelines/inpaint.yaml (AR to 100 ms, similarity above)."), ""]
    for key, title, unit in (("snr", "SNR inside the gap", "dB, higher is better; silence = 0"),
                             ("lsd", "LSD inside the gap", "dB, lower is better"),
                             ("psnr", "Spectrogram PSNR over the masked region", ("dB, higher is better; "
                                                                                 "published CNN: 12.9")),
                             ("visqol", "ViSQOL of the whole 8 s excerpt", (f"MOS 1-5, first gap of each "
                                                                            f"length in {args.visqol} excerpts"))):
        if key == "visqol" and not args.visqol:
            continue
        lines += [f"## {title} ({unit})", "", "| gap | " + " | ".join(methods) + " |",
                  "| --- |" + " --- |" * len(methods)]
        for length in LENGTHS_MS:
            cells = []
            for method in methods:
                mean, lo, hi = bootstrap(values[(method, length, key)], boot_rng)
                cells.append(f"{mean:.2f} [{lo:.2f}, {hi:.2f}]")
            lines.append(f"| {length} ms | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Detection", "",
              f"- inserted gaps found (start within 5 ms): {recall_hits} of {recall_total}",
              f"- other detections in the gapped excerpts: {false_in_gapped}",
              f"- detections in the {len(excerpts)} clean excerpts (false repairs): {false_clean}", ""]
    lines += ["## Speed (2 CPU cores shared with other work; one gap per 8 s clip, detection included)", "",
              "| method | seconds per second of audio |", "| --- | --- |"]
    for method in (m for m in methods if m != "silence"):
        lines.append(f"| {method} | {seconds[method] / audio_s[method]:.3f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
