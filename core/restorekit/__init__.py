"""restorekit: plugin-based audio restoration.

The package root stays light: `import restorekit` does not import torch. The public
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Audio": "restorekit.audio",
    "read_audio": "restorekit.io",
    "write_audio": "restorekit.io",
    "Stage": "restorekit.stage",
    "StageParams": "restorekit.stage",
    "Accepts": "restorekit.stage",
    "hookimpl": "restorekit.hookspecs",
    "Pipeline": "restorekit.runner",
    "Node": "restorekit.runner",
    "load_pipeline": "restorekit.pipeline",
    "PipelineError": "restorekit.errors",
    "RestorekitError": "restorekit.errors",
    "get_registry": "restorekit.plugins",
    "make_demo_clip": "restorekit.demo",
    "compare": "restorekit_tools.compare",  # the tooling plugin's; kept here for existing callers
    "measure": "restorekit_tools.measure",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.audio import Audio
    from restorekit.demo import make_demo_clip
    from restorekit.errors import PipelineError, RestorekitError
    from restorekit.hookspecs import hookimpl
    from restorekit.io import read_audio, write_audio
    from restorekit.pipeline import load_pipeline
    from restorekit.plugins import get_registry
    from restorekit.runner import Node, Pipeline
    from restorekit.stage import Accepts, Stage, StageParams
    from restorekit_tools.compare import compare
    from restorekit_tools.measure import measure


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'restorekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
