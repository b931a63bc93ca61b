"""Shared fixtures for the core tests: WAV writing, a registry with test-only stages, clean logging."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from core_fakes import tone


# No test downloads model weights (Demucs's htdemucs would be fetched on a machine with internet);
# tests of the download path unset this and mock the fetch. Subprocesses inherit it.
os.environ.setdefault("RESTOREKIT_OFFLINE", "1")

_LOG = logging.getLogger("restorekit")
_PRISTINE_LOGGER = (_LOG.handlers[:], _LOG.level, _LOG.propagate)


def _reset_logger() -> None:
    handlers, level, propagate = _PRISTINE_LOGGER
    _LOG.handlers[:], _LOG.level, _LOG.propagate = handlers[:], level, propagate


@pytest.fixture(autouse=True)
def _restore_restorekit_logger():
    """The CLI points the `restorekit` logger at the stderr of its invocation (propagate off, so caplog
    sees nothing); every test starts from the logger as it was before any test ran, even when a
    module-scoped fixture invoked the CLI."""
    _reset_logger()
    yield
    _reset_logger()


@pytest.fixture
def make_wav():
    """make_wav(path, seconds=0.25, rate=44100, channels=1, subtype="PCM_16", data=None) -> path."""

    def make(path: Path, seconds: float = 0.25, rate: int = 44100, channels: int = 1,
             subtype: str = "PCM_16", data: np.ndarray | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = tone(int(seconds * rate), rate, channels)
        sf.write(str(path), data, rate, subtype=subtype)
        return path

    return make


@pytest.fixture
def fake_registry(monkeypatch):
    """Make the process-wide registry the built-in util/mix stages plus the test-only stages."""
    from core_fakes import registry_with

    from restorekit import plugins

    registry = registry_with()
    monkeypatch.setattr(plugins, "_registry", registry)
    return registry
