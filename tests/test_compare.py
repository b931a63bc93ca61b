"""`restorekit.compare` and `restorekit compare`: rows, statistics, gains that are real and
no-ops that are exactly zero, failures that do not stop the rest, the report files, the real
degradation presets, and the command line."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from pydantic import Field

import restorekit
from restorekit_tools.compare import read_results, summarize
from restorekit_tools.compare.stats import mean_ci
from restorekit.errors import StageError, UsageError
from restorekit.runner import Pipeline
from restorekit.stage import Stage, StageParams
from restorekit_plugins.util import Gain

RATE = 16000
FREQ = 440.0
METRICS = ["snr", "si_sdr", "lsd", "clipped_fraction"]


class HardClip(Stage):
    """Test-only degradation: clip at a fixed level."""

    id = "rktest.hard_clip"
    summary = "Clip every sample to +-level."

    class Params(StageParams):
        level: float = Field(0.5, gt=0, le=1, description="Clip level (fraction of full scale).")

    def process(self, audio):
        return audio.with_samples(audio.samples.clamp(-self.params.level, self.params.level))


class SineDeclip(Stage):
    """Test-only restoration that truly improves a clipped sine: fit the sine to the unclipped
    samples (least squares) and replace the clipped ones with the fit."""

    id = "rktest.sine_declip"
    summary = "Rebuild the clipped samples of a sine of known frequency."

    class Params(StageParams):
        freq_hz: float = Field(FREQ, gt=0, le=20000, description="Frequency of the sine in Hz.")

    def process(self, audio):
        x = audio.numpy().astype(np.float64)
        t = np.arange(audio.frames) / audio.sample_rate
        w = 2 * np.pi * self.params.freq_hz * t
        basis = np.stack([np.sin(w), np.cos(w)], axis=1)
        out = x.copy()
        for c, row in enumerate(x):
            ok = np.abs(row) < np.abs(row).max() * 0.999
            coef, *_ = np.linalg.lstsq(basis[ok], row[ok], rcond=None)
            out[c, ~ok] = (basis @ coef)[~ok]
        return audio.with_samples(torch.from_numpy(out.astype(np.float32)))


class FailsOnShort(Stage):
    id = "rktest.fails_on_short"
    summary = "Refuses audio shorter than 0.3 s (an expected failure)."

    def process(self, audio):
        if audio.duration_s < 0.3:
            raise StageError("too short for this stage; give at least 0.3 s")
        return audio


class Explodes(Stage):
    id = "rktest.explodes"
    summary = "Raises an unexpected exception on every file."

    def process(self, audio):
        raise RuntimeError("boom")


def write_sines(folder: Path, amps=(0.8, 0.9, 1.0, 0.7), seconds: float = 0.5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    for i, amp in enumerate(amps):
        x = amp * np.sin(2 * np.pi * FREQ * t + 0.7 * i)
        sf.write(folder / f"sine{i}.wav", x.astype(np.float32), RATE, subtype="FLOAT")
    return folder


@pytest.fixture
def clean_dir(tmp_path):
    return write_sines(tmp_path / "clean")


def by_key(rows):
    return {(r["file"], r["pipeline"], r["metric"]): r for r in rows}


def summary_of(rows, pipeline, metric):
    return next(s for s in summarize(rows) if s.pipeline == pipeline and s.metric == metric)


# -- gains that are real, no-ops that are exactly zero -------------------------------------------

def test_a_true_restoration_shows_a_gain_and_a_no_op_shows_exactly_none(clean_dir, tmp_path):
    out = tmp_path / "report"
    rows = restorekit.compare(
        {"declip": Pipeline([SineDeclip()], name="declip"), "noop": Pipeline([Gain()], name="noop")},
        clean=clean_dir, degrade=Pipeline([HardClip()], name="clip at 0.5"), out_dir=out,
        metrics=METRICS, seed=3)
    files = [f"sine{i}.wav" for i in range(4)]
    # one row per file x row x metric; clipped_fraction (reference-free) also for the clean file
    assert len(rows) == 4 * 3 * len(METRICS) + 4
    assert not [r for r in rows if r["error"]]
    keyed = by_key(rows)
    for f in files:
        assert keyed[(f, "clean", "clipped_fraction")]["value"] < 1e-3
        assert keyed[(f, "degraded", "clipped_fraction")]["value"] > 0.3
        assert keyed[(f, "declip", "snr")]["value"] > 60
        assert keyed[(f, "degraded", "snr")]["value"] < 20
        for m in METRICS:
            assert keyed[(f, "noop", m)]["value"] == keyed[(f, "degraded", m)]["value"]

    for m, sign in (("snr", 1), ("si_sdr", 1), ("lsd", -1), ("clipped_fraction", -1)):
        gain = summary_of(rows, "declip", m).diff
        assert gain.n == 4
        assert sign * gain.low > 0 and sign * gain.high > 0, (m, gain)  # the whole CI on the better side
        none = summary_of(rows, "noop", m).diff
        assert none.mean == 0.0 and none.low == 0.0 and none.high == 0.0, (m, none)
    assert summary_of(rows, "declip", "snr").diff.low > 40

    md = (out / "summary.md").read_text()
    snr_section = md.split("## snr")[1].split("##")[0]
    assert "| declip |" in snr_section and "| better |" in snr_section.split("| declip |")[1].splitlines()[0]
    assert "no clear change" in snr_section.split("| noop |")[1].splitlines()[0]
    assert "95 % CI" in md and "Δ vs degraded" in md

    back = read_results(out / "results.csv")
    assert [(r["file"], r["pipeline"], r["metric"]) for r in back] == [(r["file"], r["pipeline"], r["metric"])
                                                                        for r in rows]
    assert all(b["value"] == r["value"] for b, r in zip(back, rows))
    for f in files:
        stem = f.replace(".", "_")
        for label in ("clean", "degraded", "declip", "noop"):
            info = sf.info(out / "audio" / stem / f"{label}.wav")
            assert info.subtype == "PCM_16" and info.samplerate == RATE
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("<audio ") == 16 and html.count('<img class="spec"') == 4


def test_degradation_from_yaml_and_per_file_seeds(clean_dir, tmp_path):
    (tmp_path / "deg.yaml").write_text("name: quieter\nstages:\n  - use: util.gain\n    with: {gain_db: -6}\n")
    (tmp_path / "noop.yaml").write_text("name: noop\nstages:\n  - use: util.gain\n    with: {gain_db: 0}\n")
    rows = restorekit.compare([tmp_path / "noop.yaml"], clean=clean_dir, degrade=tmp_path / "deg.yaml",
                              metrics=["snr", "si_sdr"])
    expected = -20 * math.log10(1 - 10 ** (-6 / 20))  # error is (g - 1) x: 6.04 dB
    for r in rows:
        if r["metric"] == "snr":
            assert abs(r["value"] - expected) < 0.01
        else:
            assert r["value"] > 100  # a pure gain is no distortion at all to SI-SDR
    assert {r["pipeline"] for r in rows} == {"degraded", "noop"}


def test_each_file_gets_its_own_seed_and_runs_repeat_exactly(clean_dir):
    class AddNoise(Stage):
        id = "rktest.add_noise"
        summary = "White noise from the stage's seeded generator."

        def process(self, audio):
            n = self.rng().standard_normal(audio.samples.shape).astype(np.float32) * 0.01
            return audio.with_samples(audio.samples + torch.from_numpy(n))

    def run(seed):
        return restorekit.compare([], clean=clean_dir, degrade=Pipeline([AddNoise()]), metrics=["snr"], seed=seed)

    first, again, other = run(0), run(0), run(1)
    assert [r["value"] for r in first] == [r["value"] for r in again]
    assert [r["value"] for r in first] != [r["value"] for r in other]
    assert len({round(r["value"], 9) for r in first}) == 4  # every file got different noise


# -- failures -----------------------------------------------------------------------------------------

def test_a_failure_on_one_file_is_a_row_and_the_rest_go_on(tmp_path):
    clean = write_sines(tmp_path / "clean", amps=(0.8, 0.9, 1.0))
    sf.write(clean / "short.wav", np.full(3200, 0.1, dtype=np.float32), RATE)  # 0.2 s
    (clean / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "report"
    rows = restorekit.compare({"fragile": Pipeline([FailsOnShort()]), "explodes": Pipeline([Explodes()]),
                               "noop": Pipeline([Gain()])},
                              clean=clean, degrade=Pipeline([HardClip()]), out_dir=out, metrics=["snr"])
    errors = {(r["file"], r["pipeline"]): r["error"] for r in rows if not r["metric"]}
    assert "too short" in errors[("short.wav", "fragile")]
    assert all("internal error: RuntimeError: boom" in errors[(f, "explodes")]
               for f in ("sine0.wav", "sine1.wav", "sine2.wav", "short.wav"))
    assert "broken.wav" in {f for f, _ in errors}
    ok = [r for r in rows if r["metric"] == "snr" and r["value"] is not None]
    assert len(ok) == 4 * 2 + 3  # degraded and noop on the 4 readable files, fragile on the 3 long ones
    fragile = summary_of(rows, "fragile", "snr")
    assert fragile.stat.n == 3 and fragile.errors == 1
    assert summary_of(rows, "explodes", "snr").errors == 4
    md = (out / "summary.md").read_text()
    assert "## Failures" in md and "too short for this stage" in md
    html = (out / "report.html").read_text()
    assert "too short for this stage" in html and "internal error: RuntimeError: boom" in html
    assert (out / "figures" / "short_wav.png").exists()


def test_usage_errors_come_before_any_audio(clean_dir, tmp_path):
    noop = Pipeline([Gain()])
    with pytest.raises(UsageError, match="degradation preset"):
        restorekit.compare([noop], clean=clean_dir)
    with pytest.raises(UsageError, match="give one of: clean files"):
        restorekit.compare([noop], clean=clean_dir, inputs=clean_dir, degrade="lowres-8k")
    with pytest.raises(UsageError, match="nothing to compare"):
        restorekit.compare([noop])
    with pytest.raises(UsageError, match="--degrade applies to --clean"):
        restorekit.compare([noop], inputs=clean_dir, degrade="lowres-8k")
    with pytest.raises(UsageError, match="compares against a reference"):
        restorekit.compare([noop], inputs=clean_dir, metrics=["snr"])
    with pytest.raises(UsageError, match="no audio files"):
        restorekit.compare([noop], inputs=tmp_path / "missing")
    with pytest.raises(restorekit.PipelineError, match="no such degradation preset"):
        restorekit.compare([noop], clean=clean_dir, degrade="lowres-8kk")


def test_inputs_mode_reports_reference_free_metrics(clean_dir, tmp_path):
    rows = restorekit.compare({"clip": Pipeline([HardClip()])}, inputs=clean_dir, out_dir=tmp_path / "r",
                              metrics=["clipped_fraction", "rms_dbfs"])
    assert {r["pipeline"] for r in rows} == {"input", "clip"}
    gain = summary_of(rows, "clip", "clipped_fraction").diff
    assert gain.low > 0.3  # clipping raised the clipped fraction on every input
    assert "Δ vs input" in (tmp_path / "r" / "summary.md").read_text()


def test_outputs_at_another_rate_are_aligned_and_the_notes_say_so(clean_dir):
    up = Pipeline([restorekit.get_registry().get("util.resample")({"sample_rate_hz": 48000})])
    rows = restorekit.compare({"up": up}, clean=clean_dir, degrade=Pipeline([Gain()]), metrics=["snr"])
    r = next(r for r in rows if r["pipeline"] == "up")
    assert "resampled est 48000 -> 16000 Hz" in r["notes"]
    assert r["value"] > 40


def test_an_output_of_another_length_is_a_failed_row_naming_the_lengths_not_a_score(clean_dir, tmp_path):
    class Truncate(Stage):
        id = "rktest.truncate"
        summary = "Keep only the first 20 frames (a pipeline that really changes the length)."

        def process(self, audio):
            return audio.with_samples(audio.samples[:, :20].clone())

    class Double(Stage):
        id = "rktest.double"
        summary = "Play the audio twice."

        def process(self, audio):
            return audio.with_samples(torch.cat([audio.samples, audio.samples], dim=1))

    out = tmp_path / "report"
    rows = restorekit.compare({"cut": Pipeline([Truncate()]), "twice": Pipeline([Double()]),
                               "noop": Pipeline([Gain()])}, clean=clean_dir, degrade=Pipeline([Gain()]),
                              out_dir=out, metrics=["snr", "mel_cosine"])
    for label, seconds in (("cut", 20 / RATE), ("twice", 1.0)):
        mine = [r for r in rows if r["pipeline"] == label]
        assert len(mine) == 4 and all(r["metric"] == "" and r["value"] is None for r in mine), mine
        for r in mine:  # before, the common part scored 200 dB and a cosine of 1
            assert f"the output of {label} is {seconds:.3f} s long but the clean reference 0.500 s" in r["error"]
        assert summary_of(rows, label, "snr").errors == 4
    assert all(r["value"] is not None for r in rows if r["pipeline"] in ("degraded", "noop"))
    assert "the output of twice is 1.000 s long" in (out / "summary.md").read_text()


def test_the_default_metrics_leave_out_slow_ones_with_a_note(clean_dir):
    from restorekit_tools.compare import run_comparison

    run = run_comparison([Pipeline([Gain()], name="noop")], clean=clean_dir, degrade=Pipeline([Gain()]))
    ids = {r["metric"] for r in run.rows}
    assert "snr" in ids and "lsd" in ids and "visqol" not in ids
    assert any(n.startswith("metric visqol skipped: ") for n in run.notes), run.notes
    if restorekit.get_registry().metrics["visqol"].unavailable() is None:
        assert "metric visqol skipped: not run by default (slow: about" in "; ".join(run.notes)


# -- statistics ---------------------------------------------------------------------------------------

def test_mean_ci_is_the_t_interval():
    from scipy import stats

    xs = [1.0, 2.5, 2.0, 4.0, 3.1]
    s = mean_ci(xs)
    low, high = stats.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
    assert abs(s.low - low) < 1e-12 and abs(s.high - high) < 1e-12 and s.n == 5
    one = mean_ci([2.0])
    assert one.mean == 2.0 and math.isnan(one.low) and not one.excludes_zero
    assert mean_ci([]).n == 0
    assert mean_ci([1.0, float("nan"), 3.0]).n == 2


def test_differences_are_paired_by_file():
    rows = [{"file": f, "pipeline": p, "metric": "m", "value": v, "unit": "", "error": None}
            for f, p, v in [("a", "degraded", 1.0), ("b", "degraded", 10.0), ("c", "degraded", 5.0),
                            ("a", "x", 2.0), ("b", "x", 11.0), ("c", "x", None)]]
    rows[-1]["error"] = "failed"
    x = next(s for s in summarize(rows) if s.pipeline == "x")
    assert x.diff.n == 2 and x.diff.mean == 1.0 and x.diff.low == x.diff.high == 1.0
    assert x.errors == 1 and x.stat.n == 2


# -- real degradation presets --------------------------------------------------------------------------

def test_every_shipped_degradation_preset_runs_in_a_comparison(tmp_path):
    from restorekit_tools.demo import make_clean_clip
    from restorekit.pipeline import named_degradations

    presets = named_degradations()
    if not presets:
        pytest.skip("no degradation presets in pipelines/degrade/ yet")
    clean = tmp_path / "clean"
    clean.mkdir()
    sf.write(clean / "music.wav", make_clean_clip(1.5, seed=1), 44100, subtype="FLOAT")
    for name in presets:
        rows = restorekit.compare({"noop": Pipeline([Gain()])}, clean=clean, degrade=name,
                                  metrics=["snr", "bandwidth_hz"])
        assert not [r for r in rows if r["error"]], (name, rows)
        keyed = by_key(rows)
        assert keyed[("music.wav", "noop", "snr")]["value"] == keyed[("music.wav", "degraded", "snr")]["value"]
        if name == "lowres-8k":  # nothing above 4 kHz survives
            assert keyed[("music.wav", "degraded", "bandwidth_hz")]["value"] < 4500
            assert keyed[("music.wav", "clean", "bandwidth_hz")]["value"] > 10000


# -- Python entry point and command line ------------------------------------------------------------------

def test_restorekit_compare_is_callable_whatever_was_imported_first():
    code = ("import restorekit_tools.compare.report, restorekit; assert callable(restorekit.compare); "
            "from restorekit import compare; assert compare is restorekit.compare; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert callable(restorekit.compare)


def _cli():
    from restorekit.cli import cli

    return cli


def test_cli_compare_prints_the_summary_and_fails_when_a_run_failed(clean_dir, tmp_path, monkeypatch):
    from restorekit.plugins import get_registry

    from restorekit.plugins import Entry

    monkeypatch.setitem(get_registry().stages.entries, HardClip.id, Entry(HardClip, "tests"))
    monkeypatch.setitem(get_registry().stages.entries, Explodes.id, Entry(Explodes, "tests"))
    (tmp_path / "clip.yaml").write_text(f"name: clip\nstages:\n  - use: {HardClip.id}\n")
    (tmp_path / "noop.yaml").write_text("name: noop\nstages:\n  - use: util.gain\n")
    (tmp_path / "boom.yaml").write_text(f"name: boom\nstages:\n  - use: {Explodes.id}\n")
    runner = CliRunner()
    ok = runner.invoke(_cli(), ["-q", "compare", str(tmp_path / "noop.yaml"), "--clean", str(clean_dir),
                                "--degrade", str(tmp_path / "clip.yaml"), "-o", str(tmp_path / "r1"),
                                "-m", "snr", "-m", "lsd"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "r1" / "report.html").exists() and "report.html" in ok.output
    loud = runner.invoke(_cli(), ["compare", str(tmp_path / "noop.yaml"), str(tmp_path / "boom.yaml"),
                                  "--clean", str(clean_dir), "--degrade", str(tmp_path / "clip.yaml"),
                                  "-o", str(tmp_path / "r2"), "-m", "snr"])
    assert loud.exit_code == 1, loud.output
    assert "FAILED sine0.wav [boom]: stage 'explodes' (rktest.explodes, plugin 'tests'): internal error: RuntimeError: boom" in loud.output
    line = next(x for x in loud.output.splitlines() if x.strip().startswith("noop"))
    assert "+0.0000" in line and "no clear change" in line
    with open(tmp_path / "r2" / "results.csv", newline="") as f:
        assert next(csv.reader(f)) == ["file", "pipeline", "metric", "value", "unit", "error", "notes"]
    usage = runner.invoke(_cli(), ["compare", str(tmp_path / "noop.yaml"), "--clean", str(clean_dir)])
    assert usage.exit_code == 2 and "degradation preset" in usage.output


@pytest.mark.slow
def test_cli_compare_end_to_end_in_a_subprocess(clean_dir, tmp_path):
    (tmp_path / "deg.yaml").write_text("name: quieter\nstages:\n  - use: util.gain\n    with: {gain_db: -6}\n")
    (tmp_path / "noop.yaml").write_text("name: noop\nstages:\n  - use: util.gain\n")
    out = subprocess.run([sys.executable, "-m", "restorekit", "compare", str(tmp_path / "noop.yaml"),
                          "--clean", str(clean_dir), "--degrade", str(tmp_path / "deg.yaml"),
                          "-o", str(tmp_path / "rep"), "-m", "snr"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "6.04" in out.stdout  # the degraded row's SNR
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"results.csv", "summary.md", "report.html",
                                                              "audio", "figures"}


def test_paired_delta_script_pairs_two_rows_by_file(tmp_path):
    """scripts/paired_delta.py: B - A per file, its mean and t-interval, only files both rows measured."""
    path = tmp_path / "results.csv"
    rows = [("f1", "a", "lsd", 2.0), ("f1", "b", "lsd", 1.5), ("f2", "a", "lsd", 3.0), ("f2", "b", "lsd", 2.3),
            ("f3", "a", "lsd", 1.0), ("f3", "b", "lsd", 0.6), ("f4", "a", "lsd", 9.0),  # f4: only a
            ("f1", "degraded", "lsd", 5.0)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "pipeline", "metric", "value", "unit", "error", "notes"])
        w.writerows([(a, b, c, d, "", "", "") for a, b, c, d in rows])
    out = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "paired_delta.py"), str(path),
                          "--a", "a", "--b", "b"], capture_output=True, text=True, check=True).stdout
    expected = mean_ci([-0.5, -0.7, -0.4])
    assert f"b - a {expected.mean:+.4f} [{expected.low:+.4f}, {expected.high:+.4f}]" in out and "n=3" in out, out
    assert "b above on 0" in out


def test_against_takes_the_paired_differences_against_a_chosen_row(clean_dir, tmp_path):
    """--against ROW: every Δ (summary.md, report.html, the terminal table) is the per-file difference
    from that row, which gets none itself; the degraded row is measured against it too. A row that does
    not exist is a usage error before any audio, naming the rows there are."""
    out = tmp_path / "report"
    rows = restorekit.compare(
        {"declip": Pipeline([SineDeclip()], name="declip"), "noop": Pipeline([Gain()], name="noop")},
        clean=clean_dir, degrade=Pipeline([HardClip()], name="clip at 0.5"), out_dir=out,
        metrics=["snr"], seed=3, against="declip")
    keyed = by_key(rows)
    files = [f"sine{i}.wav" for i in range(4)]
    expected = mean_ci([keyed[(f, "noop", "snr")]["value"] - keyed[(f, "declip", "snr")]["value"] for f in files])
    summary = {s.pipeline: s for s in summarize(rows, "declip")}
    assert summary["declip"].diff is None
    assert math.isclose(summary["noop"].diff.mean, expected.mean) and expected.high < -40  # the no-op loses
    md = (out / "summary.md").read_text()
    assert "Δ vs declip" in md and "(pipeline − declip)" in md and "Δ vs degraded" not in md
    noop_line = md.split("| noop |")[1].splitlines()[0]
    assert f"| {expected.mean:.1f} |" in noop_line and "| worse |" in noop_line, noop_line  # e.g. -145.4
    assert "| — |" in md.split("| declip |")[1].splitlines()[0]
    assert "against the <b>declip</b> row" in (out / "report.html").read_text()
    with pytest.raises(UsageError, match=r"--against decl: no such row; the rows are degraded, declip, noop"):
        restorekit.compare({"declip": Pipeline([SineDeclip()], name="declip"), "noop": Pipeline([Gain()])},
                           clean=clean_dir, degrade=Pipeline([HardClip()]), out_dir=tmp_path / "never",
                           metrics=["snr"], against="decl")
    assert not (tmp_path / "never").exists()
