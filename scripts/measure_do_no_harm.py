"""Does a restoration pipeline leave good input alone, and does its gate still act on noise?

Three measurements (docs/pipelines.md and docs/stages/denoise.md quote their output):

clean   Clean full-band music with a few short dropouts and nothing else wrong: 8 s
        excerpts at 44.1 kHz from held-out tracks of data/music (one per track,
        `restorekit_tools.training.data.split_of(path) == "test"`, rate >= 44.1 kHz), three 20 ms
        spans zeroed in each. The untouched excerpt is the reference. Every pipeline
        restores the damaged excerpts (`restorekit run PIPELINE DIR -o OUT` in a
        subprocess); ViSQOL, LSD, energy-normalised LSD and SI-SDR of the input and of
        each output against the reference, per excerpt, with means and paired 95 %
        intervals of output minus input.
noise   Material with a steady noise floor: the built-in demo clip (32 kHz, content below
        8 kHz, white noise at -50 dBFS) and the clean demo music at 44.1 kHz degraded with
        the `lowres-8k` preset (content below 4 kHz, white noise at 35 dB SNR). For each
        pipeline the graph up to its first stage after the per-stem gates (`remix` in
        zero_shot; the `gate` stage in dsp_chain) runs, and the power of the noise-only band
        above the content is compared with the input's (dB), with the gate notes.
scope   The gate alone (denoise.spectral_gate, prop_decrease 0.8, stationary and not) on
        the demo clip and a lowres-like clip (the demo music low-passed at 4 kHz, white
        noise 35 dB below it), whose noise-free versions are known: SI-SDR against them and
        the change of the noise-only band, for detection off (always gate every band),
        detection with gating only the bands where the floor was found, and detection with
        gating every band once a floor is found.

    OMP_NUM_THREADS=1 python scripts/measure_do_no_harm.py --part all \\
        --pipeline zero_shot=pipelines/zero_shot.yaml --before e012ecd -o /tmp/do_no_harm

`--before REV` adds the pipeline `before`: pipelines/zero_shot.yaml as committed at REV,
run with today's stages and their detection steps switched off (`detect_noise_floor:
false` on every gate: the code as it was). `--pipeline LABEL=PATH` adds any pipeline file
(repeatable; PATH may be a shipped name), `--set LABEL:STAGE.PARAM=VALUE` changes one of
its parameters; `--as-is` runs the files without touching them. dsp_chain as published
and as shipped:

    OMP_NUM_THREADS=1 python scripts/measure_do_no_harm.py --pipeline published=dsp_chain \\
        --set published:gate.detect_noise_floor=false --set published:compress.min_peak_to_loudness_db=null \\
        --pipeline dsp_chain=dsp_chain -o /tmp/do_no_harm_dsp

Results: a table on stdout and `results.json` in the output directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
EXCERPT_S = 8.0
EXCERPTS = 8
DROPOUT_S = 0.020
DROPOUT_AT = (0.23, 0.51, 0.78)  # fractions of the excerpt where the 20 ms spans start
START_AT = 0.4  # excerpt start as a fraction of the track (past intros)
METRICS = ("visqol", "lsd", "lsd_norm", "si_sdr")
GATE_IDS = ("denoise.spectral_gate",)


# -- data --------------------------------------------------------------------------------------------
def heldout_tracks(music: Path) -> list[Path]:
    from restorekit_tools.training.data import split_of

    tracks = [p for p in sorted(music.rglob("*.ogg")) if split_of(p) == "test"]
    return [p for p in tracks if sf.info(str(p)).samplerate >= RATE]


def excerpt(path: Path) -> np.ndarray:
    """EXCERPT_S seconds from START_AT of the track, at RATE, (channels, frames) float32."""
    from restorekit.audio import Audio
    from restorekit.dsp import resample

    info = sf.info(str(path))
    start = int(START_AT * info.frames)
    n = math.ceil(EXCERPT_S * info.samplerate) + 1
    x, rate = sf.read(str(path), start=start, frames=n, dtype="float32", always_2d=True)
    audio = resample(Audio.from_numpy(np.ascontiguousarray(x.T), rate), RATE)
    return audio.numpy()[:, :int(EXCERPT_S * RATE)]


def with_dropouts(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    span = int(DROPOUT_S * RATE)
    for at in DROPOUT_AT:
        i = int(at * x.shape[1])
        y[:, i:i + span] = 0.0
    return y


def write(path: Path, x: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.ascontiguousarray(x.T), rate, subtype="FLOAT")


def read(path: Path):
    from restorekit.io import read_audio

    return read_audio(path)


# -- pipelines ---------------------------------------------------------------------------------------
def pipeline_specs(args, work: Path) -> dict[str, Path]:
    from restorekit.pipeline import find_pipeline

    specs: dict[str, Path] = {}
    if args.before:
        text = subprocess.run(["git", "show", f"{args.before}:pipelines/zero_shot.yaml"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        specs["before"] = write_spec(yaml.safe_load(text), work / "pipelines" / "before.yaml", detect=False)
    sets: dict[str, list[str]] = {}
    for item in args.set or []:
        label, _, assignment = item.partition(":")
        sets.setdefault(label, []).append(assignment)
    for item in args.pipeline or ["zero_shot=zero_shot"]:
        label, _, path = item.partition("=")
        found = Path(path) if Path(path).exists() else find_pipeline(path)
        spec = yaml.safe_load(Path(found).read_text())
        for assignment in sets.get(label, []):  # stage.param=value, the value read as YAML
            key, _, value = assignment.partition("=")
            stage_id, _, param = key.partition(".")
            stage = next(st for st in spec["stages"] if st.get("id", st["use"].split(".", 1)[1]) == stage_id)
            stage.setdefault("with", {})[param] = yaml.safe_load(value)
        specs[label] = Path(found) if args.as_is else write_spec(spec, work / "pipelines" / f"{label}.yaml")
    return specs


def write_spec(spec: dict, path: Path, detect: bool | None = None) -> Path:
    if detect is not None:
        for stage in spec["stages"]:
            if stage["use"] in GATE_IDS:
                stage.setdefault("with", {})["detect_noise_floor"] = detect
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_pipeline(pipeline: Path, inputs: Path, out: Path) -> None:
    env = dict(os.environ, RESTOREKIT_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    run = subprocess.run([sys.executable, "-m", "restorekit", "-q", "run", str(pipeline), str(inputs), "-o", str(out)],
                         capture_output=True, text=True, env=env, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{pipeline} failed:\n{run.stdout}\n{run.stderr}")


def notes_of(out: Path) -> dict[str, list[str]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {Path(f["input"]).name if "input" in f else str(i): f.get("notes", [])
            for i, f in enumerate(manifest["files"])}


# -- statistics --------------------------------------------------------------------------------------
def mean_ci(values) -> tuple[float, float, float]:
    from restorekit_tools.compare.stats import mean_ci as ci

    s = ci(values)
    return s.mean, s.low, s.high


def band_db(x: np.ndarray, rate: int, low_hz: float, high_hz: float) -> float:
    """Mean power (dB) of x's band low_hz..high_hz, from a 4096-point periodogram average over the file."""
    from scipy import signal

    f, p = signal.welch(x, rate, nperseg=4096, axis=-1)
    band = (f >= low_hz) & (f <= high_hz)
    return float(10 * np.log10(np.mean(p[..., band]) + 1e-30))


# -- part 1: clean music -----------------------------------------------------------------------------
def part_clean(args, specs: dict[str, Path], work: Path) -> dict:
    from restorekit_tools.measure import measure

    tracks = heldout_tracks(Path(args.music))[:args.excerpts]
    if not tracks:
        raise SystemExit(f"no held-out tracks at >= {RATE} Hz under {args.music}")
    ref_dir, in_dir = work / "clean" / "ref", work / "clean" / "input"
    names = []
    for path in tracks:
        x = excerpt(path)
        name = f"{path.parent.name}-{path.stem}.wav"
        write(ref_dir / name, x, RATE)
        write(in_dir / name, with_dropouts(x), RATE)
        names.append(name)
    rows = {name: {} for name in names}
    outputs = {"input": in_dir}
    for label, spec in specs.items():
        out = work / "clean" / label
        print(f"running {label} ({spec}) on {len(names)} excerpts ...", file=sys.stderr, flush=True)
        run_pipeline(spec, in_dir, out)
        outputs[label] = out
    for name in names:
        ref = read(ref_dir / name)
        for label, folder in outputs.items():
            m = measure(read(folder / name), ref, list(METRICS)).as_dict()
            rows[name][label] = {k: m.get(k) for k in METRICS}
    labels = list(outputs)
    print(f"\n## Clean full-band music: {len(names)} held-out excerpts, {EXCERPT_S:g} s at {RATE} Hz, "
          f"three {DROPOUT_S * 1000:g} ms dropouts each\n")
    for metric in METRICS:
        print(f"### {metric}\n")
        print("| excerpt | " + " | ".join(labels) + " |")
        print("| --- |" + " ---: |" * len(labels))
        for name in names:
            print(f"| {name[:-4]} | " + " | ".join(_fmt(rows[name][lb][metric]) for lb in labels) + " |")
        means = [mean_ci(rows[n][lb][metric] for n in names)[0] for lb in labels]
        print("| **mean** | " + " | ".join(_fmt(v) for v in means) + " |")
        diffs = []
        for lb in labels[1:]:
            d = mean_ci(rows[n][lb][metric] - rows[n]["input"][metric] for n in names
                        if rows[n][lb][metric] is not None and rows[n]["input"][metric] is not None)
            diffs.append(f"{_fmt(d[0], True)} [{_fmt(d[1], True)}, {_fmt(d[2], True)}]")
        print("| output - input, 95 % CI | | " + " | ".join(diffs) + " |\n")
    return {"excerpts": names, "tracks": [str(t.relative_to(ROOT)) if t.is_relative_to(ROOT) else str(t)
                                          for t in tracks], "values": rows,
            "notes": {lb: notes_of(outputs[lb]) for lb in labels[1:]}}


def _fmt(v, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


# -- part 2: a steady noise floor --------------------------------------------------------------------
def noise_cases(work: Path) -> list[tuple[str, Path, float, float]]:
    """(name, file, low_hz, high_hz of the noise-only band)."""
    from restorekit_tools.demo import make_clean_clip, make_demo_clip

    folder = work / "noise" / "input"
    demo = make_demo_clip()
    write(folder / "demo.wav", demo.numpy(), demo.sample_rate)
    clean = work / "noise" / "clean.wav"
    write(clean, make_clean_clip(rate=RATE)[None], RATE)
    deg = work / "noise" / "deg"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    subprocess.run([sys.executable, "-m", "restorekit", "-q", "degrade", str(clean), "--preset", "lowres-8k",
                    "-o", str(deg)], check=True, env=env)
    x, rate = sf.read(str(deg / "clean.wav"), dtype="float32", always_2d=True)
    write(folder / "lowres8k.wav", x.T, rate)
    return [("demo", folder / "demo.wav", 9000.0, 15000.0), ("lowres8k", folder / "lowres8k.wav", 5000.0, 15000.0)]


def until_gates(spec_path: Path, out: Path) -> Path:
    """The pipeline cut after its gates: up to `remix` (zero_shot) or the first gate (a chain)."""
    spec = yaml.safe_load(spec_path.read_text())
    ids = [s.get("id", s["use"].split(".", 1)[1]) for s in spec["stages"]]
    if "remix" in ids:
        keep = ids.index("remix") + 1
    else:
        keep = next(i for i, s in enumerate(spec["stages"]) if s["use"] in GATE_IDS) + 1
    spec["stages"] = spec["stages"][:keep]
    return write_spec(spec, out)


def part_noise(args, specs: dict[str, Path], work: Path) -> dict:
    cases = noise_cases(work)
    result: dict = {}
    print("\n## Steady noise floor: level of the noise-only band after the gates (dB against the input)\n")
    print("| case | band | input dB | " + " | ".join(specs) + " |")
    print("| --- | --- | ---: |" + " ---: |" * len(specs))
    outs = {}
    for label, spec in specs.items():
        cut = until_gates(spec, work / "pipelines" / f"{label}.until_gates.yaml")
        out = work / "noise" / label
        run_pipeline(cut, work / "noise" / "input", out)
        outs[label] = out
    for name, path, lo, hi in cases:
        x, rate = sf.read(str(path), dtype="float64", always_2d=True)
        level_in = band_db(x.T, rate, lo, hi)
        cells, entry = [], {"band_hz": [lo, hi], "input_db": level_in}
        for label, out in outs.items():
            y, r2 = sf.read(str(out / path.name), dtype="float64", always_2d=True)
            change = band_db(y.T, r2, lo, hi) - level_in
            cells.append(f"{change:+.1f}")
            entry[label] = {"change_db": change, "notes": notes_of(out).get(path.name, [])}
        result[name] = entry
        print(f"| {name} | {lo / 1000:g}-{hi / 1000:g} kHz | {level_in:.1f} | " + " | ".join(cells) + " |")
    print()
    for name, entry in result.items():
        for label in outs:
            for note in entry[label]["notes"]:
                if "gate" in note:
                    print(f"- {name}, {label}: {note}")
    return result


# -- part 3: where the gate acts ---------------------------------------------------------------------
def scope_cases() -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, noise-free signal, noise, cutoff Hz) at 32 kHz: make_demo_clip's recipe, noise kept apart."""
    from scipy import signal

    from restorekit_tools.demo import OUTPUT_RATE, RENDER_RATE, make_clean_clip

    cases = []
    for name, cutoff, snr_db in (("demo", 8000.0, None), ("lowres-like", 4000.0, 35.0)):
        rng = np.random.default_rng(1)
        clean = make_clean_clip(10.0, 0).astype(np.float64)
        sos = signal.butter(12, cutoff, fs=RENDER_RATE, output="sos")
        x = signal.resample_poly(signal.sosfiltfilt(sos, clean), OUTPUT_RATE // 100, RENDER_RATE // 100)
        level = 10 ** (-50 / 20) if snr_db is None else x.std() * 10 ** (-snr_db / 20)  # demo: -50 dBFS
        cases.append((name, x, rng.standard_normal(len(x)) * level, cutoff))
    return cases


def part_scope() -> dict:
    from restorekit.audio import Audio
    from restorekit_tools.measure import measure
    from restorekit_plugins.denoise import SpectralGate

    rate = 32000
    variants = {"detection off": {"detect_noise_floor": False},
                "floor bands only": {"gate_floor_bands_only": True},
                "every band once found": {"gate_floor_bands_only": False}}
    result: dict = {}
    print("\n## The gate alone (prop_decrease 0.8): SI-SDR against the noise-free clip (dB), "
          "change of the noise-only band (dB)\n")
    print("| case | gate | input SI-SDR | " + " | ".join(variants) + " |")
    print("| --- | --- | ---: |" + " ---: |" * len(variants))
    for name, x, noise, cutoff in scope_cases():
        ref = Audio.from_numpy(x[None].astype(np.float32), rate)
        noisy = Audio.from_numpy((x + noise)[None].astype(np.float32), rate)
        base = measure(noisy, ref, ["si_sdr"]).as_dict()["si_sdr"]
        level_in = band_db(noisy.numpy(), rate, cutoff * 1.15, 15000.0)
        for stationary in (True, False):
            cells, entry = [], {}
            for label, params in variants.items():
                y = SpectralGate(stationary=stationary, **params).process(noisy)
                sdr = measure(y, ref, ["si_sdr"]).as_dict()["si_sdr"]
                change = band_db(y.numpy(), rate, cutoff * 1.15, 15000.0) - level_in
                entry[label] = {"si_sdr": sdr, "noise_band_change_db": change}
                cells.append(f"{sdr:.1f} ({change:+.1f})")
            mode = "stationary" if stationary else "non-stationary"
            result[f"{name}/{mode}"] = {"input_si_sdr": base, **entry}
            print(f"| {name} | {mode} | {base:.1f} | " + " | ".join(cells) + " |")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--part", choices=("clean", "noise", "scope", "all"), default="all")
    ap.add_argument("--pipeline", action="append", help="LABEL=PATH (repeatable); default zero_shot=zero_shot")
    ap.add_argument("--before", metavar="REV", help="add zero_shot as committed at REV, gates' detection off")
    ap.add_argument("--as-is", action="store_true", help="run --pipeline files exactly as written")
    ap.add_argument("--set", action="append", metavar="LABEL:STAGE.PARAM=VALUE",
                    help="override a parameter of the pipeline LABEL (repeatable; VALUE read as YAML)")
    ap.add_argument("--music", default=str(ROOT / "data" / "music"))
    ap.add_argument("--excerpts", type=int, default=EXCERPTS)
    ap.add_argument("-o", "--out", default="/tmp/do_no_harm")
    args = ap.parse_args(argv)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    specs = pipeline_specs(args, work)
    results: dict = {"pipelines": {k: str(v) for k, v in specs.items()}}
    if args.part in ("clean", "all"):
        results["clean"] = part_clean(args, specs, work)
    if args.part in ("noise", "all"):
        results["noise"] = part_noise(args, specs, work)
    if args.part in ("scope", "all"):
        results["scope"] = part_scope()
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
