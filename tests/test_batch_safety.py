"""Batches you can trust: no file replaced that the project did not write, one run per output
directory, resume after a crash or a kill -9 that ends bit-identical to an uninterrupted run,
SIGINT/SIGTERM with a manifest and exit 130/143, stale temporaries removed, a merged manifest,
a full disk named, and progress that says something without a terminal."""

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
from core_fakes import tone
from test_plugins import STAGE_HEADER, make_dist

from restorekit.cli import cli

SLOW = STAGE_HEADER + """
import time

class Slow(Stage):
    id = "rktest.slow"
    summary = "Waits, then adds seeded noise: a stand-in for a slow restorer."

    class Params(StageParams):
        delay_s: float = Field(0.4, ge=0, le=10, description="Seconds to wait per file.")

    def process(self, audio):
        import numpy as np
        import torch

        time.sleep(self.params.delay_s)
        noise = self.rng().standard_normal(audio.samples.shape).astype(np.float32) * 0.01
        return audio.with_samples(audio.samples * 0.5 + torch.from_numpy(noise))

@hookimpl
def register_stages(register):
    register(Slow)
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write(path: Path, freq_hz: float = 440.0, seconds: float = 0.5, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(int(seconds * rate), rate, freq_hz=freq_hz), rate,
             subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")
    return path


@pytest.fixture
def gain(tmp_path) -> Path:
    path = tmp_path / "gain.yaml"
    path.write_text("stages:\n  - id: level\n    use: util.gain\n    with: {gain_db: -6}\n")
    return path


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# -- output safety -------------------------------------------------------------------------------

def test_a_run_never_replaces_a_file_it_did_not_write(tmp_path, gain, monkeypatch):
    write(tmp_path / "take1.flac")
    other = write(tmp_path / "take1.wav", freq_hz=1000)  # a different recording with the output's name
    before = other.read_bytes()
    monkeypatch.chdir(tmp_path)
    result = invoke("run", gain, "take1.flac", "-o", ".")
    assert result.exit_code == 2
    assert ("refusing to replace 1 file(s) this project did not write (no entry in manifest.json): take1.wav; "
            "move them, choose another -o, or pass --overwrite") in result.stderr
    assert other.read_bytes() == before and not (tmp_path / "manifest.json").exists()
    forced = invoke("run", gain, "take1.flac", "-o", ".", "--overwrite")
    assert forced.exit_code == 0 and other.read_bytes() != before


def test_a_users_own_manifest_json_is_not_replaced(tmp_path, gain):
    src = write(tmp_path / "in" / "a.wav")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text('{"my": "notes"}')
    result = invoke("run", gain, src, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "is not a restorekit manifest" in result.stderr
    assert (tmp_path / "out" / "manifest.json").read_text() == '{"my": "notes"}'


def test_one_run_at_a_time_per_output_directory(tmp_path, gain):
    import fcntl

    src = write(tmp_path / "in" / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".restorekit.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242")
        held.flush()
        result = invoke("run", gain, src, "-o", out)
    assert result.exit_code == 2
    assert result.stderr == (f"error: another restorekit run (pid 4242) is writing to {out}; wait for it to finish "
                             "or choose another -o\n")
    assert invoke("run", gain, src, "-o", out).exit_code == 0  # released: the next run goes ahead
    assert not (out / ".restorekit.lock").exists()


# -- resume and the merged manifest ----------------------------------------------------------------

def test_a_rerun_skips_what_is_up_to_date_and_redoes_what_changed(tmp_path, gain):
    srcs = [write(tmp_path / "in" / f"{i}.wav", 300 + 100 * i) for i in range(3)]
    out = tmp_path / "out"
    assert invoke("run", gain, tmp_path / "in", "-o", out).exit_code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    again = invoke("run", gain, tmp_path / "in", "-o", out)
    assert again.exit_code == 0 and "restored 3 of 3 file(s)" in again.stdout and "3 already up to date" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")} == stamps  # nothing rewritten
    assert [f["status"] for f in manifest(out)["files"]] == ["skipped"] * 3
    (out / "1.wav").unlink()
    write(srcs[2], 999)  # the input changed: its sha256 no longer matches
    third = invoke("run", gain, tmp_path / "in", "-o", out)
    assert third.exit_code == 0 and "1 already up to date" in third.stdout
    assert (out / "0.wav").stat().st_mtime_ns == stamps["0.wav"]
    assert (out / "1.wav").exists() and (out / "2.wav").stat().st_mtime_ns != stamps["2.wav"]
    changed = invoke("run", gain, tmp_path / "in", "-o", out, "--set", "level.gain_db=-3")  # other settings:
    assert changed.exit_code == 0 and "up to date" not in changed.stdout  # ours, so replaced without --overwrite
    y, _ = sf.read(out / "0.wav")
    assert np.allclose(y, sf.read(srcs[0])[0] * 10 ** (-3 / 20), atol=1e-4)
    runs = manifest(out)["runs"]
    assert len(runs) == 4 and all(r["status"] == "complete" for r in runs)


def test_the_manifest_merges_runs_and_a_failed_rerun_keeps_earlier_files(tmp_path, gain):
    a, b = write(tmp_path / "a.wav"), write(tmp_path / "b.wav", 880)
    out = tmp_path / "out"
    assert invoke("run", gain, a, "-o", out).exit_code == 0
    assert invoke("run", gain, b, "-o", out).exit_code == 0
    assert invoke("run", gain, tmp_path / "nosuch.wav", b, "-o", out).exit_code == 1
    files = {Path(f["input"]).name: f["status"] for f in manifest(out)["files"]}
    assert files == {"a.wav": "ok", "b.wav": "skipped", "nosuch.wav": "failed"}


# -- interruptions: a real batch, killed ------------------------------------------------------------

def slow_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    make_dist(site, "rktest-slow", {"rkslow": "rktest_slow"}, {"rktest_slow": SLOW})
    return site


def start(args: list[str], site: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "restorekit", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)


def sigint_default() -> None:
    """SIGINT as a terminal's Ctrl-C finds it: a job a shell started in the background (`cmd &`) runs with
    SIGINT ignored, and its children inherit that, so a test run that way would see SIGINT do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_done(out: Path, count: int, proc: subprocess.Popen, limit_s: float = 120) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            done = sum(f["status"] == "ok" for f in manifest(out)["files"])
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the batch did not get going")


@pytest.mark.slow  # starts restorekit subprocesses
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_a_killed_batch_resumes_and_ends_bit_identical_to_an_uninterrupted_one(tmp_path, how):
    site = slow_site(tmp_path)
    for i in range(6):
        write(tmp_path / "in" / f"{i}.wav", 200 + 50 * i)
    pipe = tmp_path / "slow.yaml"
    pipe.write_text("stages:\n  - use: rktest.slow\n")
    whole = start(["-q", "run", str(pipe), "in", "-o", "whole"], site, tmp_path)
    assert whole.wait(timeout=120) == 0, whole.communicate()

    proc = start(["run", str(pipe), "in", "-o", "out"], site, tmp_path)
    wait_for_done(tmp_path / "out", 2, proc)
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=60)
    out = tmp_path / "out"
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        (out / ".3.wav.abcd1234.part").write_bytes(b"half a file")  # what a kill leaves mid-write
    else:
        assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[how], err
        assert "run the same command again to do the rest" in err and "Traceback" not in err
        assert manifest(out)["status"] == "interrupted"
    listed = json.loads((out / "manifest.json").read_text())  # valid JSON whatever moment the kill came
    done_before = sum(f["status"] == "ok" for f in listed["files"])
    assert 2 <= done_before < 6
    assert not [p for p in out.iterdir() if p.name.endswith(".part") and how != "SIGKILL"]

    rerun = start(["run", str(pipe), "in", "-o", "out"], site, tmp_path)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert f"{done_before} already up to date" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    for i in range(6):
        assert (out / f"{i}.wav").read_bytes() == (tmp_path / "whole" / f"{i}.wav").read_bytes(), i
    assert manifest(out)["status"] == "complete"


# -- full disk, progress -----------------------------------------------------------------------------

def test_a_full_disk_is_named_and_the_failures_are_still_printed(tmp_path, gain, monkeypatch):
    import shutil
    from collections import namedtuple

    import restorekit.io as rio

    srcs = [write(tmp_path / "in" / f"{i}.wav") for i in range(2)]
    real_soundfile = rio.sf.SoundFile

    def full(*args, **kwargs):
        if len(args) > 1 and args[1] == "w":
            raise rio.sf.LibsndfileError(0, prefix="System error. ")
        return real_soundfile(*args, **kwargs)

    monkeypatch.setattr(rio.sf, "SoundFile", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 4096))
    result = invoke("run", gain, *srcs, "-o", tmp_path / "out")
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2 and all("cannot write: the disk is full (4096 bytes free in" in f for f in failed)

    import restorekit.outdir as od

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rio.sf, "SoundFile", real_soundfile)
    monkeypatch.setattr(od.tempfile, "mkstemp", no_space)
    result = invoke("run", gain, *srcs, tmp_path / "nosuch.wav", "-o", tmp_path / "out2")
    assert result.exit_code == 1
    assert f"FAILED {tmp_path / 'nosuch.wav'}: no such file or directory" in result.stderr
    assert f"error: cannot write {tmp_path / 'out2' / 'manifest.json'}: the disk is full" in result.stderr
    assert "Traceback" not in result.stderr and not list((tmp_path / "out2").glob(".manifest.*"))


def test_progress_without_a_terminal_is_a_line_per_file_and_quiet_silences_it(tmp_path, gain):
    srcs = [write(tmp_path / "in" / f"{i}.wav", seconds=1.0) for i in range(2)]
    result = invoke("run", gain, *srcs, "-o", tmp_path / "out")
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line.split(" 1.0 s of audio")[0] for line in lines] == [f"[1/2] ok {srcs[0]}:", f"[2/2] ok {srcs[1]}:"]
    quiet = invoke("-q", "run", gain, *srcs, "-o", tmp_path / "q")
    assert quiet.exit_code == 0 and quiet.stdout == "" and "[" not in quiet.stderr  # only the one summary line


@pytest.mark.slow  # starts a restorekit subprocess on a pseudo-terminal
def test_progress_on_a_terminal_is_one_bar_in_seconds_of_audio(tmp_path, gain):
    import pty

    for i in range(3):
        write(tmp_path / "in" / f"{i}.wav", seconds=2.0)
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "restorekit", "run", str(gain), "in", "-o", "out"], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "audio:" in text and "/6 s audio" in text, text  # one bar over 3 x 2 s of audio, with ETA
    assert "[1/3]" not in text  # no per-file lines on a terminal
