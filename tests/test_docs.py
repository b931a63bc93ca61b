"""Documentation stays in step with the code: the stage index, each family's page, models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from restorekit.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_stage_index", ROOT / "scripts" / "gen_stage_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_index_is_current():
    current = (ROOT / "docs" / "stages" / "README.md").read_text()
    assert current == _generator().render(), "run: python scripts/gen_stage_index.py"


def test_every_builtin_stage_is_documented_on_its_family_page():
    registry = get_registry()
    for sid, owner in ((sid, registry.stages.owner(sid)) for sid in registry.stages):
        if registry.stages[sid].__module__.startswith("restorekit_plugins"):
            family = sid.split(".")[0]
            page = ROOT / "docs" / "stages" / f"{ {'mix': 'util'}.get(family, family)}.md"
            assert page.is_file() and sid in page.read_text(), f"{sid} is not described in {page.name}"


def test_every_shipped_weight_file_has_a_line_in_models_md():
    weights = sorted((ROOT / "plugins" / "restorekit_plugins" / "weights").glob("*.safetensors"))
    models = (ROOT / "docs" / "models.md").read_text()
    for w in weights:
        assert w.name in models, f"{w.name} has no line in docs/models.md"


def test_no_audio_file_is_tracked_by_git():
    """Third-party audio must never be committed (comparison reports write it under docs/results/)."""
    import shutil
    import subprocess

    import pytest

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    audio = [p for p in tracked.splitlines() if p.lower().endswith((".wav", ".flac", ".mp3", ".ogg", ".opus"))]
    assert not audio, f"audio files are tracked: {audio[:5]}"
    probe = subprocess.run(["git", "check-ignore", "-q", "docs/results/any/preset/audio/x/y.wav"], cwd=root)
    assert probe.returncode == 0, "report audio at any depth under docs/results/ must be git-ignored"
