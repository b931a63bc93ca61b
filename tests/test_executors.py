"""Executors: `--workers N` (worker processes) and `--executor ray` give the same outputs and manifest
entries as a serial run, fail one file at a time, fail cleanly when a worker cannot load the pipeline,
and stop promptly on SIGINT/SIGTERM with a rerun that does the rest. The Ray tests run on a local Ray
started here (`ray.init(num_cpus=2)`); scripts/test.sh installs the `ray` extra so they run in CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from test_batch_safety import SLOW as SLOW_STAGE
from test_plugins import make_dist

from restorekit.cli import cli

# random draws per file (noise, a random low-pass family/order/cutoff): only the per-file seed
# makes two runs agree
RANDOM = """\
name: random_degrade
device: cpu
stages:
  - id: noise
    use: degrade.noise
    with: {snr_db: 20, color: pink}
  - id: lowpass
    use: degrade.random_lowpass
  - id: level
    use: util.gain
    with: {gain_db: -3}
"""

# a stage whose load() fails (a checkpoint file that exists but is not one): the parent, which only
# validates the pipeline, is fine; each worker, which loads it, is not
BROKEN_LOAD = """\
device: cpu
stages:
  - use: restore.unet
    with: {checkpoint: CKPT}
"""

SLOW = SLOW_STAGE  # the slow stand-in restorer of tests/test_batch_safety.py (stage rktest.slow)

TIMING_FREE = ("input", "outputs", "status", "error", "input_sha256", "input_sample_rate", "input_channels",
               "duration_s", "notes", "output_bit_depth", "settings")


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def write_inputs(folder: Path, count: int = 4, seconds: float = 0.5, rate: int = 44100) -> Path:
    rng = np.random.default_rng(7)
    for i in range(count):
        path = folder / ("sub" if i % 2 else "") / f"take{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * rate)) / rate
        music = np.stack([np.sin(2 * np.pi * (220 + 110 * i) * t), np.sin(2 * np.pi * (330 + 55 * i) * t)], 1)
        sf.write(path, (0.3 * music + 0.02 * rng.standard_normal(music.shape)).astype(np.float32), rate,
                 subtype="PCM_24")
    return folder


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def entries(out: Path) -> dict[str, dict]:
    """The manifest's file entries without timings, output paths relative to OUT, keyed by input."""
    files = {}
    for entry in manifest(out)["files"]:
        kept = {k: entry.get(k) for k in TIMING_FREE}
        kept["outputs"] = [(Path(o) if Path(o).is_absolute() else out.parent / o).relative_to(out).as_posix()
                           for o in entry["outputs"]]  # relative: to the run's cwd, here OUT's parent
        files[entry["input"]] = kept
    return files


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.wav"))}


def assert_same_run(out: Path, serial: Path) -> None:
    """Outputs byte for byte, and every per-file manifest field but the timings, as the serial run."""
    assert outputs(out) == outputs(serial)
    assert entries(out) == entries(serial)
    for key in ("pipeline", "settings", "output", "device", "status"):
        assert manifest(out)[key] == manifest(serial)[key], key


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Inputs, the random pipeline, and the serial (--workers 1) run every executor must match."""
    root = tmp_path_factory.mktemp("executors")
    write_inputs(root / "in")
    pipe = root / "random.yaml"
    pipe.write_text(RANDOM)
    serial = invoke("run", pipe, root / "in", "-o", root / "serial", "--workers", "1")
    assert serial.exit_code == 0, serial.output
    takes = [sf.read(p)[0] for p in sorted((root / "serial").rglob("*.wav"))]
    assert not np.array_equal(takes[0][:100], takes[2][:100])  # noise differs per file: seeds matter
    return root


# -- unit pieces ----------------------------------------------------------------------------------

def test_workers_spread_over_visible_gpus_only_for_plain_cuda():
    from restorekit_tools.executors import worker_device

    assert [worker_device("cuda", i, 2) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda", 3, 1) == "cuda"
    assert worker_device("cuda:1", 0, 2) == "cuda:1"  # an explicit GPU stays
    assert worker_device("cpu", 5, 2) == "cpu"


def test_outputs_land_in_the_driver_so_a_worker_outliving_it_leaves_no_unlisted_output(tmp_path, monkeypatch):
    """A worker writes into a hidden staging folder; the driver moves the file into place when it records
    the result. What a killed driver's worker finished later is removed by the next run."""
    from restorekit.batch import FileResult, FileTask
    from restorekit_tools.executors import Staging

    monkeypatch.chdir(tmp_path)
    task = FileTask("in/a.wav", "sub/a", ("out/sub/a.wav",), 1, "wav", 24, False, "0" * 64)
    first = Staging([task])
    staged = Path(first.task(task).targets[0])
    assert staged.parent.name.startswith(".restorekit-pending-") and staged.name == "a.wav"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"finished after the driver was killed")
    Staging([task])  # the next run
    assert not staged.exists() and not list(tmp_path.rglob("*.wav"))

    second = Staging([task])
    moved = Path(second.task(task).targets[0])
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"audio")
    result = FileResult(str(tmp_path / "in" / "a.wav"), outputs=[str(tmp_path / moved)], status="ok",
                        notes=[f"{tmp_path / moved}: a note naming the staged path"])
    landed = second.land(task, result)
    assert (landed.input, landed.outputs) == ("in/a.wav", ["out/sub/a.wav"])
    assert landed.notes == ["out/sub/a.wav: a note naming the staged path"]
    assert Path("out/sub/a.wav").read_bytes() == b"audio"
    second.clean()
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["out", "out/sub", "out/sub/a.wav"]


def test_both_executors_are_registered_without_importing_torch_or_ray():
    code = ("import sys\nfrom restorekit.plugins import get_registry\n"
            "print(sorted(get_registry().tables['executor']), 'torch' in sys.modules, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split("\n")[0] == "['processes', 'ray'] False False", proc.stderr


def test_an_unknown_executor_is_a_usage_error(batch):
    result = invoke("run", batch / "random.yaml", batch / "in", "-o", batch / "nope", "--executor", "dask")
    assert result.exit_code == 2 and "unknown executor 'dask'; known: processes, ray" in result.stderr


# -- worker processes -------------------------------------------------------------------------------

def test_workers_give_the_serial_outputs_and_manifest_bit_for_bit(batch):
    result = invoke("run", batch / "random.yaml", batch / "in", "-o", batch / "w2", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "restored 4 of 4 file(s)" in result.stdout
    assert_same_run(batch / "w2", batch / "serial")


def test_a_failing_file_among_good_ones_is_one_failed_line_with_workers(batch, tmp_path):
    src = tmp_path / "in"
    write_inputs(src, count=3)
    (src / "broken.wav").write_text("not audio")
    result = invoke("run", batch / "random.yaml", src, "-o", tmp_path / "out", "--workers", "2")
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1
    assert failed[0].startswith(f"FAILED {src / 'broken.wav'}: {src / 'broken.wav'}: not a readable audio file")
    assert "restored 3 of 4 file(s)" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.wav")) == ["take0.wav", "take1.wav", "take2.wav"]


def test_a_worker_that_cannot_load_the_pipeline_is_one_clean_error(batch, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    bad.with_suffix(".json").write_text("{}")
    pipe = tmp_path / "broken.yaml"
    pipe.write_text(BROKEN_LOAD.replace("CKPT", str(bad)))
    result = invoke("run", pipe, batch / "in", "-o", tmp_path / "out", "--workers", "2")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: a worker could not load the pipeline: stage 'unet' (restore.unet, "
                                    "plugin 'unet'): cannot load: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").rglob("*.wav"))


@pytest.mark.slow  # a real batch in a subprocess, interrupted
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_an_interrupted_batch_with_workers_stops_promptly_and_resumes_bit_identical(tmp_path, how):
    site = tmp_path / "site"
    make_dist(site, "rkexec-slow", {"rkexec": "rkexec_slow"}, {"rkexec_slow": SLOW})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    write_inputs(tmp_path / "in", count=6, seconds=0.25)
    pipe = tmp_path / "slow.yaml"
    pipe.write_text("stages:\n  - use: rktest.slow\n    with: {delay_s: 0.5}\n")

    def restorekit(*args, **kw):
        return subprocess.Popen([sys.executable, "-m", "restorekit", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)
        # (SIGINT as Ctrl-C finds it: a shell's background job, and its children, start with it ignored)

    proc = restorekit("run", str(pipe), "in", "-o", "out", "--workers", "2")
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "manifest.json").exists() or \
            sum(f["status"] == "ok" for f in manifest(tmp_path / "out")["files"]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2  # the workers (and multiprocessing's resource tracker)
    sent = time.monotonic()
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10, "the pool must stop promptly, not finish the batch"
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[how], err
    assert "run the same command again to do the rest" in err and "Traceback" not in err
    assert manifest(tmp_path / "out")["status"] == "interrupted"
    done = sum(f["status"] == "ok" for f in manifest(tmp_path / "out")["files"])
    assert 2 <= done < 6
    _assert_gone(workers)
    assert not list((tmp_path / "out").rglob(".restorekit-pending-*"))  # a file cut off leaves nothing
    if how == "SIGTERM":
        return  # the rerun is the same after either signal: checked once

    whole = restorekit("-q", "run", str(pipe), "in", "-o", "whole")  # serial, uninterrupted
    assert whole.wait(timeout=120) == 0, whole.communicate()
    again = restorekit("run", str(pipe), "in", "-o", "out", "--workers", "2")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"{done} file(s) already up to date" in err  # only the rest was done
    assert outputs(tmp_path / "out") == outputs(tmp_path / "whole")
    resumed = {k: {**v, "status": "ok" if v["status"] == "skipped" else v["status"]}
               for k, v in entries(tmp_path / "out").items()}
    assert resumed == entries(tmp_path / "whole")  # the skipped ones keep the entries of the first run


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _assert_gone(pids: list[int], limit_s: float = 10) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "(Z)" not in _state(p)]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"worker processes still running: {alive}")


def _state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "(Z)"
    return next((line for line in status.splitlines() if line.startswith("State:")), "")


# -- Ray --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (2 CPUs), shut down at its end; the executor reuses it."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'restorekit[ray]'")
    # "local": a Ray of our own, even where `ray start` registered (or left behind) a cluster on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_gives_the_serial_outputs_and_manifest_bit_for_bit(batch, ray_session):
    result = invoke("run", batch / "random.yaml", batch / "in", "-o", batch / "ray", "--executor", "ray",
                    "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "restored 4 of 4 file(s)" in result.stdout
    assert_same_run(batch / "ray", batch / "serial")
    assert ray_session.is_initialized()  # a Ray this process started before is left running


def test_ray_a_failing_file_relative_paths_and_a_broken_pipeline(batch, ray_session, tmp_path, monkeypatch):
    src = tmp_path / "in"
    write_inputs(src, count=2)
    (src / "broken.wav").write_text("not audio")
    monkeypatch.chdir(tmp_path)  # relative paths: the actors get absolute ones, the manifest keeps these
    result = invoke("run", batch / "random.yaml", "in", "-o", "out", "--executor", "ray")
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED in/broken.wav: in/broken.wav: not a readable audio file")
    listed = {f["input"]: f["outputs"] for f in manifest(tmp_path / "out")["files"]}
    assert listed == {"in/take0.wav": ["out/take0.wav"], "in/sub/take1.wav": ["out/sub/take1.wav"],
                      "in/broken.wav": []}
    assert outputs(tmp_path / "out") == {k: v for k, v in outputs(batch / "serial").items() if k in (
        "take0.wav", "sub/take1.wav")}  # the same files restored as in the serial run (same relative paths)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    bad.with_suffix(".json").write_text("{}")
    pipe = tmp_path / "broken.yaml"
    pipe.write_text(BROKEN_LOAD.replace("CKPT", str(bad)))
    broken = invoke("run", pipe, src, "-o", tmp_path / "out2", "--executor", "ray", "--workers", "2")
    assert broken.exit_code == 2
    assert broken.stderr.startswith("error: a Ray worker (") and "could not load the pipeline: stage 'unet'" \
        in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_without_ray_installed_the_error_says_how_to_install_it(batch, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = invoke("run", batch / "random.yaml", batch / "in", "-o", tmp_path / "out", "--executor", "ray")
    assert result.exit_code == 2
    assert result.stderr == ("error: the ray executor needs Ray, which is not installed: "
                             "pip install 'restorekit[ray]'\n")
