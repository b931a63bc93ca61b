"""restorekit: plugin-based audio restoration.

The package root stays light: `import restorekit` does not import torch. The public
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "restorekit.audio": ("Audio",), "restorekit.io": ("read_audio", "write_audio"),
    "restorekit.stage": ("Stage", "StageParams", "Accepts"), "restorekit.hookspecs": ("hookimpl",),
    "restorekit.runner": ("Pipeline", "Node"), "restorekit.pipeline": ("load_pipeline",),
    "restorekit.errors": ("PipelineError", "RestorekitError"), "restorekit.plugins": ("get_registry",),
    # the tooling plugin's, kept here for callers of the core package
    "restorekit_tools.demo": ("make_demo_clip",), "restorekit_tools.compare": ("compare",),
    "restorekit_tools.measure": ("measure",),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.audio import Audio
    from restorekit_tools.demo import make_demo_clip
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
