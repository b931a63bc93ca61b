"""The built wheel carries the pipelines and entry points and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "-o", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (path,) = out.glob("restorekit-*.whl")
    return path


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "restorekit_plugins/pipelines/zero_shot.yaml" in names
    assert "restorekit_plugins/pipelines/dsp_chain.yaml" in names
    assert "restorekit_plugins/pipelines/crnn.yaml" in names
    assert any(n.startswith("restorekit_plugins/pipelines/degrade/") for n in names)
    assert "restorekit_plugins/util.py" in names
    for weights in ("unet", "cqs", "crnn", "crnn-direct", "srflow"):  # shipped weights travel with their configs
        assert f"restorekit_plugins/weights/{weights}.safetensors" in names
        assert f"restorekit_plugins/weights/{weights}.json" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[restorekit]" in text and "util = restorekit_plugins.util" in text
    assert "restorekit = restorekit.cli:main" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_wheel_runs_shipped_pipeline_by_name(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([str(py), "-c", "import restorekit; print(restorekit.__file__)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    assert str(env_dir) in where, f"the venv did not import its own restorekit: {where}"
    run = subprocess.run([str(env_dir / "bin" / "restorekit"), "-q", "run", "zero_shot", "-o", "out"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = sf.info(str(tmp_path / "out" / "demo.wav"))
    assert info.duration > 5
