"""Batch throughput of `restorekit run` with local workers and the Ray executor, and the cost of a resume.

    python benchmarks/bench_batch.py [--files 10] [--seconds 180] [--pipelines dsp_chain unet]
                                     [--modes serial workers2 ray2] [--no-resume] [--workdir DIR]

Synthesizes FILES stereo 44.1 kHz clips of SECONDS each (synthesized music, band-limited
to ~8 kHz like low-resolution text-to-music output, so `unet` restores rather than passes
through; written to a temporary folder, never committed), then, for every pipeline, times
fresh CLI processes (`python -m restorekit -q run PIPELINE IN -o OUT ...`, model loading
and worker start included) for each mode:

- serial:   `--workers 1` (this process, torch on every core)
- workers2: `--workers 2` (two worker processes, one torch thread each on 2 cores)
- ray2:     `--executor ray --workers 2` (Ray started by the CLI on this machine, two actors)
- ray2-attached: the same with `--address auto`, joining a Ray started before the timing
  (`ray start --head --num-cpus 2 --block`, ended by its pid afterwards): the cost of Ray
  without its start-up

and checks that every mode's outputs are byte-identical to the serial run's. Resume: the
serial command again into a fresh folder, killed with SIGKILL when the manifest shows half
the files done, then rerun; the rerun's wall time and the total (killed run + rerun) are
compared with the uninterrupted serial run, and the outputs with its outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"serial": ["--workers", "1"], "workers2": ["--workers", "2"],
         "ray2": ["--executor", "ray", "--workers", "2"],
         "ray2-attached": ["--executor", "ray", "--workers", "2", "--address", "auto"]}
RAY_PORT = 6391


def make_inputs(folder: Path, files: int, seconds: float, rate: int = 44100) -> None:
    import numpy as np
    import soundfile as sf
    import soxr

    from restorekit_tools.demo import make_clean_clip

    folder.mkdir(parents=True, exist_ok=True)
    piece = 10.0  # the demo music in 10 s pieces, a different seed each, joined
    for i in range(files):
        path = folder / f"track{i:02d}.wav"
        if path.exists():
            continue
        chans = []
        for c in range(2):
            parts = [make_clean_clip(piece, seed=1000 * i + 100 * c + k, rate=rate)
                     for k in range(int(np.ceil(seconds / piece)))]
            chans.append(np.concatenate(parts)[: int(seconds * rate)])
        music = np.stack(chans, 1).astype(np.float32)
        low = soxr.resample(soxr.resample(music, rate, 16000, "VHQ"), 16000, rate, "VHQ")  # ~8 kHz bandwidth
        sf.write(path, np.clip(low, -1, 1), rate, subtype="PCM_24")


def cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    return subprocess.Popen([sys.executable, "-m", "restorekit", "-q", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    proc = cli(args)
    out, err = proc.communicate()
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"restorekit {' '.join(args)} failed ({proc.returncode}):\n{out}{err}")
    return took


def start_ray_head() -> subprocess.Popen:
    """A Ray head on this machine for `--address auto`, up before the timed run."""
    import ray  # noqa: F401 - fails early without the ray extra

    log = tempfile.NamedTemporaryFile("w+", prefix="ray_head_", suffix=".log")  # noqa: SIM115
    head = subprocess.Popen(["ray", "start", "--head", "--port", str(RAY_PORT), "--num-cpus", "2",
                             "--include-dashboard", "false", "--block"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(240):
        if "Ray runtime started" in Path(log.name).read_text():
            time.sleep(1.0)
            return head
        if head.poll() is not None:
            break
        time.sleep(0.25)
    stop_ray_head(head)
    raise SystemExit(f"ray start --head did not come up:\n{Path(log.name).read_text()[-2000:]}")


def stop_ray_head(head: subprocess.Popen) -> None:
    """End the head started above, by its process group (only what it started)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(head.pid, signal.SIGKILL)
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # else Ray's default init joins a ghost
    if current.is_file() and current.read_text().strip().endswith(f":{RAY_PORT}"):
        current.unlink()


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.wav"))}


def done_in(folder: Path) -> int:
    try:
        return sum(f.get("status") == "ok" for f in json.loads((folder / "manifest.json").read_text())["files"])
    except (OSError, ValueError, KeyError):
        return 0


def resume(pipeline: str, inputs: Path, out: Path, files: int, extra: list[str]) -> tuple[float, float, int]:
    """(seconds until the kill, seconds of the rerun, files done before the kill)."""
    start = time.perf_counter()
    proc = cli(["run", pipeline, str(inputs), "-o", str(out), *extra])
    while done_in(out) < files // 2:
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before half the files were done: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at, done = time.perf_counter() - start, done_in(out)
    rerun = timed(["run", pipeline, str(inputs), "-o", str(out), *extra])
    return killed_at, rerun, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--pipelines", nargs="+", default=["dsp_chain", "unet"])
    parser.add_argument("--modes", nargs="+", default=["serial", "workers2", "ray2"], choices=list(MODES))
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep inputs and outputs here (default: a temp dir).")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_batch_"))
    inputs = work / "in"
    t = time.perf_counter()
    make_inputs(inputs, args.files, args.seconds)
    audio_s = args.files * args.seconds
    print(f"{args.files} files x {args.seconds:.0f} s stereo 44.1 kHz ({audio_s / 60:.0f} min of audio) in {inputs} "
          f"(made in {time.perf_counter() - t:.0f} s); {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f}")
    rows = []
    for pipeline in args.pipelines:
        walls: dict[str, float] = {}
        for mode in args.modes:
            out = work / f"{pipeline}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            head = start_ray_head() if mode == "ray2-attached" else None
            try:
                walls[mode] = timed(["run", pipeline, str(inputs), "-o", str(out), *MODES[mode]])
            finally:
                if head is not None:
                    stop_ray_head(head)
            same = "" if mode == args.modes[0] else (
                "identical" if outputs(out) == outputs(work / f"{pipeline}-{args.modes[0]}") else "DIFFERENT")
            load = os.getloadavg()[0]
            print(f"{pipeline:<10} {mode:<9} {walls[mode]:7.1f} s  {audio_s / walls[mode]:6.1f}x real time  "
                  f"{same:<9} (load {load:.2f})", flush=True)
            rows.append((pipeline, mode, walls[mode], same))
        for ray_mode in ("ray2", "ray2-attached"):
            if ray_mode in walls and "workers2" in walls:
                print(f"{pipeline:<10} {ray_mode} over workers2: {100 * (walls[ray_mode] / walls['workers2'] - 1):+.1f} %")
        if "workers2" in walls and "serial" in walls:
            print(f"{pipeline:<10} workers2 speed-up over serial: {walls['serial'] / walls['workers2']:.2f}x")
        if not args.no_resume and "serial" in walls:
            out = work / f"{pipeline}-resume"
            shutil.rmtree(out, ignore_errors=True)
            killed_at, rerun, done = resume(pipeline, inputs, out, args.files, MODES["serial"])
            same = "identical" if outputs(out) == outputs(work / f"{pipeline}-serial") else "DIFFERENT"
            print(f"{pipeline:<10} resume: killed (SIGKILL) at {killed_at:.1f} s with {done}/{args.files} done; rerun "
                  f"{rerun:.1f} s ({100 * rerun / walls['serial']:.0f} % of the uninterrupted {walls['serial']:.1f} s); "
                  f"killed + rerun {killed_at + rerun:.1f} s ({100 * ((killed_at + rerun) / walls['serial'] - 1):+.1f} "
                  f"%); outputs {same}", flush=True)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
