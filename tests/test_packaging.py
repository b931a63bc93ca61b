"""The built wheel carries the pipelines and entry points and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
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
    for weights in ("unet", "cqs", "crnn", "crnn-direct", "srflow", "srenvelope", "inpaintflow"):  # weights travel with configs
        assert f"restorekit_plugins/weights/{weights}.safetensors" in names
        assert f"restorekit_plugins/weights/{weights}.json" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[restorekit]" in text and "util = restorekit_plugins.util" in text
    assert "restorekit = restorekit.cli:main" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


def dependency_dirs() -> list[str]:
    """The directories the running interpreter imports third-party packages from: its environment's
    site-packages (a venv's own, and the base interpreter's where that venv sees them), the user
    site, and any path a .pth file added, but not the standard library, not this checkout and not
    a checkout an editable install of restorekit points at (the wheel must not lean on one)."""
    stdlib = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    dirs: list[str] = []
    for entry in sys.path:
        if not entry:
            continue
        path = Path(entry).resolve()
        if not path.is_dir() or str(path) in dirs or path.is_relative_to(ROOT):
            continue
        site_dir = path.name in ("site-packages", "dist-packages")
        if not site_dir and any(path.is_relative_to(s) for s in stdlib):
            continue  # the new venv has the same standard library
        if not site_dir and any((path / pkg / "__init__.py").is_file()
                                for pkg in ("restorekit", "restorekit_plugins", "restorekit_tools")):
            continue  # an editable install's source tree
        dirs.append(str(path))
    return dirs


def test_wheel_runs_shipped_pipeline_by_name(wheel, tmp_path):
    # A venv of its own (not system_site_packages, which reaches the *base* interpreter's packages,
    # not those of the venv running the tests) with only the wheel installed in it; the heavy
    # dependencies come from the running environment through a .pth file, after the venv's own
    # site-packages, so the wheel's restorekit is the one imported. Plain path lines in a .pth do
    # not run the .pth files of those directories: an editable install's path to a checkout stays out.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "_restorekit_test_deps.pth").write_text("".join(f"{d}\n" for d in dependency_dirs()))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    where = subprocess.run([str(py), "-c", "import restorekit, restorekit_plugins, restorekit_tools, soundfile, torch; "
                            "print(restorekit.__file__, restorekit_plugins.__file__, restorekit_tools.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.returncode == 0, f"the wheel or its dependencies do not import in the venv: {where.stderr}"
    for module in where.stdout.split():
        assert module.startswith(site), f"the venv did not import the wheel's packages: {where.stdout}"
    run = subprocess.run([str(env_dir / "bin" / "restorekit"), "-q", "run", "zero_shot", "-o", "out"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = sf.info(str(tmp_path / "out" / "demo.wav"))
    assert info.duration > 5
