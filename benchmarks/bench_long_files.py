"""Peak memory against file length (issue 14): long 44.1 kHz stereo files through the CLI.

For each length, a synthetic test file is written block by block into a temporary
directory (24-bit WAV; harmonic tones with a changing pitch and amplitude, band-limited at
8 kHz, repeating every 60 s, over fresh white noise at -60 dBFS, so the gate finds a floor,
bwe a cutoff and restore.unet a band limit: every stage does its work), then

    python -m restorekit -q run PIPELINE FILE -o OUT --device cpu

runs in a child process whose VmHWM (peak RSS) is polled from /proc every 50 ms. Start-up
is the same command on a 1-second file. Reported: wall seconds, × real time, peak RSS, peak
beyond start-up, and what the decoded input alone would take as float32 (the whole-file
path holds that and a few copies).

    python benchmarks/bench_long_files.py [--minutes 5 30 120] [--pipelines dsp_chain unet] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def write_test_file(path: Path, seconds: float, block_s: float = 10.0, cycle_s: float = 60.0) -> None:
    """Tones (a new pitch every 0.5 s, harmonics up to 8 kHz, a 60 s cycle) over fresh -60 dBFS white noise,
    24-bit stereo, written block by block."""
    cycle = int(cycle_s * RATE)
    t = np.arange(cycle) / RATE
    f0 = 110 * 2 ** ((np.floor(t * 2) * 7 % 24) / 12)
    env = np.exp(-((t * 2) % 1.0) * 4)
    tones = np.zeros((2, cycle))
    phase = 2 * np.pi * f0 * t
    for h in range(1, 40):
        amp = np.where(f0 * h < 8000, 0.25 / h, 0.0)
        tones[0] += amp * np.sin(h * phase)
        tones[1] += amp * np.sin(h * phase + 0.3 * h)
    tones *= env
    total, block = int(seconds * RATE), int(block_s * RATE)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_24") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            x = np.take(tones, np.arange(start, start + n) % cycle, axis=1)
            x += 10 ** (-60 / 20) * np.random.default_rng(start // block).standard_normal((2, n))
            f.write((0.5 * x).T.astype(np.float32))


def run_peak(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read()}")
    return wall, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 30, 120])
    parser.add_argument("--pipelines", nargs="+", default=["dsp_chain", "unet"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tmp", type=Path, default=None, help="where the test files go (several GB for 2 h)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        write_test_file(tmp / "startup.wav", 1.0)
        for minutes in args.minutes:
            src = tmp / f"test_{minutes:g}min.wav"
            write_test_file(src, minutes * 60)
            for pipeline in args.pipelines:
                base = [sys.executable, "-m", "restorekit", "-q", "run", pipeline]
                startup = run_peak(base + [str(tmp / "startup.wav"), "-o", str(tmp / "o0"), "--device", "cpu"])
                out = tmp / f"out_{pipeline}_{minutes:g}"
                wall, peak = run_peak(base + [str(src), "-o", str(out), "--device", "cpu"])
                manifest = json.loads((out / "manifest.json").read_text())["files"][0]
                row = {"pipeline": pipeline, "minutes": minutes, "wall_s": round(wall, 1),
                       "x_real_time": round(minutes * 60 / wall, 1), "peak_mb": round(peak),
                       "startup_peak_mb": round(startup[1]), "beyond_startup_mb": round(peak - startup[1]),
                       "input_float32_mb": round(minutes * 60 * RATE * 2 * 4 / 2**20),
                       "notes": manifest["notes"], "load": os.getloadavg()[0]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                for p in out.glob("*.wav"):
                    p.unlink()
            src.unlink()
    print("\n| pipeline | length | wall s | × real time | peak RSS MB | beyond start-up MB | input as float32 MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['pipeline']} | {r['minutes']:g} min | {r['wall_s']} | {r['x_real_time']} | {r['peak_mb']} | "
              f"{r['beyond_startup_mb']} | {r['input_float32_mb']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
