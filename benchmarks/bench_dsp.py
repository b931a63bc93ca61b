#!/usr/bin/env python
"""Speed and memory of the dsp_chain stages and of the whole chain (in-process and through the CLI).

    python benchmarks/bench_dsp.py            # 10 s 32 kHz mono, 3 min 44.1 kHz stereo, CLI batch 10 x 3 min
    python benchmarks/bench_dsp.py --quick    # 10 s mono, 30 s stereo, CLI batch 3 x 30 s
    python benchmarks/bench_dsp.py --json results.json --only compress,eq --no-cli

Inputs are synthesized here (music from restorekit_tools.demo plus noise; nothing is committed)
and kept in a temporary directory for the run.

In-process figures: every measurement runs in its own subprocess, which imports restorekit,
builds the stage from pipelines/dsp_chain.yaml (same parameters as the chain), runs it once
on 1 s of audio (lazy imports, first-call set-up) -- all of that is "start-up" -- then loads
the input. Then the RSS high-water mark is reset (`/proc/self/clear_refs`, 5) and the stage
runs `--repeats` times through a one-stage `Pipeline` (so the runner's rate/channel
adaptation is included, as in the chain). rtf = seconds of audio / best wall time; peak =
high-water mark minus the RSS just before the first timed run (the input is already held,
so "peak" counts what the stage adds: its output and temporaries), also given as a multiple
of the input's float32 size.

CLI figures: `python -m restorekit -q run pipelines/dsp_chain.yaml DIR --device cpu` as a
child process on 1 and on N files; wall time from the parent, peak RSS = the child's VmHWM
polled every 20 ms from /proc (wait4's ru_maxrss is not used: it includes the parent's RSS
copied at fork). Start-up is the same command on a 0.5 s clip; peak beyond start-up = batch
peak minus that run's peak; growth = N-file peak minus 1-file peak (should be ~0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ROOT / "pipelines" / "dsp_chain.yaml"
MB = 1e6


# -- inputs --------------------------------------------------------------------------------

def synth_music(seconds: float, rate: int, channels: int, seed: int = 0, band_hz: float | None = None):
    """(channels, frames) float32: 15 s of demo music tiled, decorrelated channels, -50 dB noise."""
    import numpy as np
    from scipy import signal

    from restorekit_tools.demo import make_clean_clip

    rng = np.random.default_rng(seed)
    frames = int(seconds * rate)
    loop = make_clean_clip(min(seconds, 15.0), seed, rate=rate).astype(np.float64)
    music = np.tile(loop, frames // len(loop) + 1)[:frames]
    out = np.empty((channels, frames), np.float32)
    sos = signal.butter(10, band_hz, fs=rate, output="sos") if band_hz else None
    for c in range(channels):
        row = 0.6 * np.roll(music, 4410 * c) + 10 ** (-50 / 20) * rng.standard_normal(frames)
        out[c] = signal.sosfilt(sos, row) if sos is not None else row
    return out


def input_specs(quick: bool) -> dict[str, tuple[float, int, int]]:
    long_s = 30.0 if quick else 180.0
    return {"10s_32k_mono": (10.0, 32000, 1), f"{long_s / 60:g}min_44k1_stereo": (long_s, 44100, 2)}


def make_inputs(workdir: Path, quick: bool) -> dict[str, Path]:
    import numpy as np

    paths = {}
    for name, (seconds, rate, channels) in input_specs(quick).items():
        path = workdir / f"{name}_{rate}.npy"
        band = 8000.0 if rate == 32000 else None  # MusicGen-like: 32 kHz with ~8 kHz of bandwidth
        np.save(path, synth_music(seconds, rate, channels, band_hz=band))
        paths[name] = path
    return paths


# -- one measurement in a fresh process ---------------------------------------------------------

def rss_bytes(field: str = "VmRSS", pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def worker(target: str, input_path: str, repeats: int, chain_path: Path) -> dict:
    t0 = time.perf_counter()
    import gc

    import numpy as np
    import torch

    from restorekit.audio import Audio
    from restorekit.pipeline import load_pipeline
    from restorekit.runner import Pipeline

    chain = load_pipeline(chain_path, device="cpu")
    pipeline = chain if target == "chain" else Pipeline([chain.stage(target)], device="cpu")
    pipeline.prepare("cpu")
    rate = int(Path(input_path).stem.rsplit("_", 1)[1])
    samples = np.load(input_path)
    warm = Audio(torch.from_numpy(np.ascontiguousarray(samples[:, :rate])), rate)
    pipeline.run(warm)
    startup_s = time.perf_counter() - t0
    audio = Audio(torch.from_numpy(samples), rate)
    del warm
    gc.collect()
    baseline = rss_bytes()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM"
    except OSError:
        method = "unavailable"
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = pipeline.run(audio)
        walls.append(time.perf_counter() - start)
        del result
    peak = rss_bytes("VmHWM") if method == "VmHWM" else 0
    return {
        "target": target, "input": Path(input_path).stem.rsplit("_", 1)[0], "audio_s": audio.duration_s,
        "startup_s": startup_s, "wall_s": min(walls), "rtf": audio.duration_s / min(walls),
        "peak_extra_mb": (peak - baseline) / MB, "input_mb": samples.nbytes / MB,
        "peak_extra_x_input": (peak - baseline) / samples.nbytes, "baseline_mb": baseline / MB,
        "memory_method": method,
    }


def measure(target: str, input_path: Path, repeats: int, chain_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", target, str(input_path), "--repeats", str(repeats),
           "--pipeline", str(chain_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        return {"target": target, "input": input_path.stem, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the CLI on a batch of files ----------------------------------------------------------------

def run_cli(chain_path: Path, inputs: list[Path], outdir: Path) -> dict:
    """Run the chain through the CLI on `inputs`; wall time, peak RSS, RSS samples over time."""
    cmd = [sys.executable, "-m", "restorekit", "-q", "run", str(chain_path), *map(str, inputs),
           "-o", str(outdir), "--device", "cpu"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[float, int]] = []
    high_water = [0]

    def poll() -> None:  # VmHWM of the child's own address space (wait4's ru_maxrss would include
        while proc.returncode is None:  # the parent's RSS copied at fork time, before exec)
            try:
                samples.append((time.perf_counter() - start, rss_bytes(pid=str(proc.pid))))
                high_water[0] = max(high_water[0], rss_bytes("VmHWM", pid=str(proc.pid)))
            except (OSError, ValueError):
                break
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    thread.join(1)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"CLI failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return {"wall_s": wall, "peak_mb": high_water[0] / MB, "rss_samples": samples}


def cli_batch(workdir: Path, quick: bool, files: int, chain_path: Path) -> dict:
    import numpy as np
    import soundfile as sf

    seconds = 30.0 if quick else 180.0
    rate = 44100
    indir = workdir / "batch"
    indir.mkdir()
    base = synth_music(seconds, rate, 2)
    paths = []
    for i in range(files):  # each file differs (shifted, own noise) so nothing is cached by accident
        x = np.roll(base, 1000 * i, axis=1) + 1e-4 * np.random.default_rng(i).standard_normal(base.shape)
        path = indir / f"track{i:02d}.wav"
        sf.write(str(path), x.T.astype(np.float32), rate, subtype="PCM_24")
        paths.append(path)
    del base, x
    tiny = workdir / "tiny.wav"
    sf.write(str(tiny), synth_music(0.5, 32000, 1).T, 32000, subtype="PCM_16")
    startup = run_cli(chain_path, [tiny], workdir / "out_tiny")
    one = run_cli(chain_path, paths[:1], workdir / "out_one")
    many = run_cli(chain_path, paths, workdir / "out_many")
    input_mb = seconds * rate * 2 * 4 / MB
    audio_s = seconds * files
    third = [s for s in many["rss_samples"] if s[0] > startup["wall_s"]]
    n = len(third) // 3
    return {
        "files": files, "seconds_each": seconds, "audio_s": audio_s, "input_mb": input_mb,
        "startup_s": startup["wall_s"], "startup_peak_mb": startup["peak_mb"],
        "wall_s": many["wall_s"], "rtf": audio_s / many["wall_s"],
        "rtf_after_startup": audio_s / (many["wall_s"] - startup["wall_s"]),
        "peak_mb": many["peak_mb"], "peak_extra_mb": many["peak_mb"] - startup["peak_mb"],
        "peak_extra_x_input": (many["peak_mb"] - startup["peak_mb"]) / input_mb,
        "one_file_peak_mb": one["peak_mb"], "growth_mb": many["peak_mb"] - one["peak_mb"],
        "rss_first_third_max_mb": max((s[1] for s in third[:n]), default=0) / MB,
        "rss_last_third_max_mb": max((s[1] for s in third[-n:]), default=0) / MB if n else 0,
    }


# -- report -------------------------------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def table(rows: list[dict]) -> str:
    lines = ["| stage | input | rtf (x real time) | wall s | start-up s | peak added MB | x input |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['input']} | error: {' '.join(r['error'])} | | | | |")
            continue
        lines.append(f"| {r['target']} | {r['input']} | {r['rtf']:.0f} | {r['wall_s']:.3f} | {r['startup_s']:.2f} "
                     f"| {r['peak_extra_mb']:.0f} | {r['peak_extra_x_input']:.2f} |")
    return "\n".join(lines)


def cli_table(b: dict) -> str:
    header = ("| files | audio s | wall s | rtf | rtf after start-up | start-up s | peak MB "
              "| peak beyond start-up MB | x one input | 1-file peak MB | growth 1 -> N MB |")
    row = (f"| {b['files']} x {b['seconds_each']:g} s | {b['audio_s']:.0f} | {b['wall_s']:.1f} | {b['rtf']:.0f} "
           f"| {b['rtf_after_startup']:.0f} | {b['startup_s']:.2f} | {b['peak_mb']:.0f} | {b['peak_extra_mb']:.0f} "
           f"| {b['peak_extra_x_input']:.2f} | {b['one_file_peak_mb']:.0f} | {b['growth_mb']:+.0f} |")
    return "\n".join([header, "| ---: " * 11 + "|", row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter inputs and a 3-file CLI batch")
    parser.add_argument("--only", default="", help="comma-separated targets (stage ids of the chain, or chain)")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI batch")
    parser.add_argument("--cli-only", action="store_true", help="only the CLI batch")
    parser.add_argument("--files", type=int, default=None, help="files in the CLI batch (default 10, quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (best is kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--pipeline", type=Path, default=CHAIN, help="the chain to measure (default: dsp_chain)")
    parser.add_argument("--worker", nargs=2, metavar=("TARGET", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.repeats or 1, args.pipeline)))
        return

    from restorekit.pipeline import load_pipeline

    targets = [n.id for n in load_pipeline(args.pipeline, device="cpu").nodes] + ["chain"]
    if args.only:
        targets = [t for t in targets if t in args.only.split(",")]
    results: dict = {"command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                     "machine": machine(), "load_before": os.getloadavg()}
    print(f"{results['command']}\n{results['machine']}; load average {results['load_before'][0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_dsp_") as tmp:
        workdir = Path(tmp)
        if not args.cli_only:
            inputs = make_inputs(workdir, args.quick)
            rows = []
            for name, path in inputs.items():
                for target in targets:
                    repeats = args.repeats or (3 if "10s" in name else 2)
                    row = measure(target, path, repeats, args.pipeline)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
            results["in_process"] = rows
            print("\n" + table(rows) + "\n")
        if not args.no_cli:
            batch = cli_batch(workdir, args.quick, args.files or (3 if args.quick else 10), args.pipeline)
            results["cli_batch"] = {k: v for k, v in batch.items()}
            print(cli_table(batch) + "\n")
            print(f"RSS during the batch (after start-up): max over the first third {batch['rss_first_third_max_mb']:.0f}"
                  f" MB, over the last third {batch['rss_last_third_max_mb']:.0f} MB")
    results["load_after"] = os.getloadavg()
    print(f"load average at the end: {results['load_after'][0]:.1f} (1 min)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
