"""The comparison report in a real browser: headless Chromium (Debian's `chromium` package)
opens report.html from disk, and every image and audio element must load; a report with a
missing file must show the failure. The report's own inline script records each element's
load state in `data-load`, which `--dump-dom` hands back after the page has settled."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import Field

import restorekit
from restorekit.errors import StageError
from restorekit.runner import Pipeline
from restorekit.stage import Stage, StageParams
from restorekit_plugins.util import Gain

RATE = 16000
# The names scripts/test.sh looks for (and installs Debian's `chromium` under when none exists).
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    """The Chromium/Chrome binary: $RESTOREKIT_CHROMIUM, else the first of NAMES on PATH. None:
    the test is skipped, saying why, or fails where RESTOREKIT_REQUIRE_CHROMIUM=1 (CI)."""
    override = os.environ.get("RESTOREKIT_CHROMIUM")
    for name in (override, *NAMES):
        if name and shutil.which(name):
            return shutil.which(name)
    reason = ("no Chromium/Chrome binary found" + (f" (RESTOREKIT_CHROMIUM={override} is not one)" if override else "")
              + f", looked for {', '.join(NAMES)} on PATH: the browser test needs one; install it "
              "(Debian/Ubuntu: sudo apt-get install chromium; scripts/test.sh does this where it can "
              "without a password) or set RESTOREKIT_CHROMIUM to its path")
    if os.environ.get("RESTOREKIT_REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason + " (RESTOREKIT_REQUIRE_CHROMIUM=1: not skipped)")
    pytest.skip(reason)


class Clip(Stage):
    id = "rktest.browser_clip"
    summary = "Clip at a level."

    class Params(StageParams):
        level: float = Field(0.5, gt=0, le=1, description="Clip level (fraction of full scale).")

    def process(self, audio):
        return audio.with_samples(audio.samples.clamp(-self.params.level, self.params.level))


class FailsOnFirst(Stage):
    id = "rktest.fails_on_quiet"
    summary = "Fails on quiet input."

    def process(self, audio):
        if float(audio.samples.abs().max()) < 0.42:
            raise StageError("input too quiet for this stage")
        return audio


class Elements(HTMLParser):
    """Every img and audio element of a page with its attributes, and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.media: list[dict[str, str]] = []
        self.body: dict[str, str] = {}
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag in ("img", "audio"):
            self.media.append({"tag": tag, **a})
        if tag == "body":
            self.body = a
        for key in ("src", "href"):
            if re.match(r"^(https?:|//|data:text/javascript)", a.get(key, "")):
                self.external.append(f"{tag} {key}={a[key]}")
        if tag in ("script", "link") and (a.get("src") or a.get("rel") == "stylesheet"):
            self.external.append(f"{tag} {a}")

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Elements:
    p = Elements()
    p.feed(text)
    return p


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of `page` after Chromium has loaded it and run its scripts, from disk (file://)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "<html" in out.stdout, f"chromium failed ({out.returncode}): {out.stderr[-2000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    chromium()  # no browser: skip before building the report
    root = tmp_path_factory.mktemp("browser")
    clean = root / "clean"
    clean.mkdir()
    t = np.arange(int(0.6 * RATE)) / RATE
    for i, amp in enumerate((0.4, 0.9)):
        sf.write(clean / f"tone {i}.wav", (amp * np.sin(2 * np.pi * 330 * t)).astype(np.float32), RATE)
    out = root / "report"
    restorekit.compare({"noop": Pipeline([Gain()]), "picky": Pipeline([FailsOnFirst()])}, clean=clean,
                       degrade=Pipeline([Clip({"level": 0.45})]), out_dir=out, metrics=["snr", "lsd"])
    return out


def test_every_image_and_audio_of_the_report_loads_in_chromium(report, tmp_path):
    source = parse((report / "report.html").read_text(encoding="utf-8"))
    assert source.external == [], "the report must work offline: no external scripts, styles or media"
    audios = [m for m in source.media if m["tag"] == "audio"]
    images = [m for m in source.media if m["tag"] == "img"]
    # 2 files x (clean, degraded, noop) + 1 file x picky (it failed on the quiet one)
    assert len(audios) == 7 and len(images) == 2
    for m in source.media:
        assert not Path(m["src"]).is_absolute() and (report / m["src"].replace("%20", " ")).is_file(), m["src"]

    dom = parse(dump_dom(report / "report.html", tmp_path / "profile"))
    states = [(m["tag"], m["src"], m.get("data-load")) for m in dom.media]
    assert len(states) == len(source.media)
    assert all(state == "ok" for _, _, state in states), states
    assert dom.body.get("data-media-ok") == str(len(source.media))
    assert dom.body.get("data-media-error") == "0" and dom.body.get("data-media-pending") == "0"
    assert "9 of 9 images and audio files loaded." in "".join(dom.text)
    assert "input too quiet for this stage" in "".join(dom.text)


def test_a_missing_file_is_reported_by_the_page(report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report, broken)
    (broken / "audio" / "tone_1_wav" / "noop.wav").unlink()
    next((broken / "figures").glob("*.png")).unlink()
    dom = parse(dump_dom(broken / "report.html", tmp_path / "profile"))
    failed = sorted(m["src"] for m in dom.media if m.get("data-load") == "error")
    assert len(failed) == 2 and any(s.endswith("noop.wav") for s in failed), failed
    assert dom.body.get("data-media-error") == "2"
    assert "could not load" in "".join(dom.text)
