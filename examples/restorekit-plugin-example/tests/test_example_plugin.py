"""The example as restorekit sees it once installed: entry point, pipeline, CLI command.

Run after `pip install -e examples/restorekit-plugin-example` (or with the package
exposed through an entry point some other way, as restorekit's tests/test_plugins.py does).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from restorekit.dsp import db_to_gain
from restorekit.pipeline import load_pipeline
from restorekit.plugins import load_registry
from restorekit.testing import synth_audio

from restorekit_example.fade import Fade

PIPELINE = Path(__file__).resolve().parents[1] / "src" / "restorekit_example" / "pipelines" / "trim_and_fade.yaml"


@pytest.fixture(scope="module")
def registry():
    reg = load_registry()
    if "example.fade" not in reg.stages:
        info = next((p for p in reg.plugins if p.name == "example"), None)
        why = info.error if info and info.error else "no `restorekit` entry point named 'example' was found"
        pytest.fail(f"restorekit does not see the example plugin ({why}); "
                    "run `pip install -e examples/restorekit-plugin-example` first")
    return reg


def test_stage_registered_through_the_entry_point(registry):
    assert registry.stages["example.fade"] is Fade
    assert registry.stages.owner("example.fade") == "example"
    info = next(p for p in registry.plugins if p.name == "example")
    assert info.error is None
    assert info.distribution == "restorekit-plugin-example"
    assert info.stages == ["example.fade"]


def test_example_pipeline_is_shipped_by_name(registry):
    assert registry.pipelines["trim_and_fade"] == PIPELINE
    assert registry.pipelines.owner("trim_and_fade") == "example"
    assert load_pipeline("trim_and_fade", registry=registry).nodes[1].stage.id == "example.fade"


def test_example_pipeline_fades_between_builtin_stages(registry):
    pipeline = load_pipeline(PIPELINE, registry=registry)
    assert [n.stage.id for n in pipeline.nodes] == ["util.trim", "example.fade", "util.gain"]
    audio = synth_audio(2, 44100, duration_s=3.0)
    out = pipeline(audio).numpy()
    x = audio.numpy()
    g = db_to_gain(-1)
    assert out.shape == x.shape
    assert np.all(out[:, 0] == 0) and np.all(out[:, -1] == 0)
    body = slice(441, 3 * 44100 - 66150)  # after the 5 ms fade-in, before the 1.5 s fade-out
    assert np.allclose(out[:, body], x[:, body] * g, atol=1e-6)
    tail = out[:, -441:]  # last 10 ms: at most -60 dB relative to the body
    assert np.sqrt(np.mean(tail ** 2)) < 1e-3 * np.sqrt(np.mean(out[:, body] ** 2))


def test_example_info_command(registry):
    from restorekit.cli import cli

    result = CliRunner().invoke(cli, ["example-info"])
    assert result.exit_code == 0, result.output
    assert "example.fade" in result.output
    assert "restorekit-plugin-example" in result.output


def test_importing_the_plugin_does_not_import_torch():
    """restorekit imports every plugin for `--help`; torch must wait until a stage runs."""
    code = "import sys, restorekit_example; assert 'torch' not in sys.modules, 'torch imported at module level'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
