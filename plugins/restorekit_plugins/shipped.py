"""restorekit's shipped pipelines and degradation presets, registered by name as any plugin's are.

They live in `pipelines/` (and `pipelines/degrade/`) of a source checkout, and in
`restorekit_plugins/pipelines/` of the wheel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from restorekit.hookspecs import hookimpl

DEGRADE_DIR = "degrade"


def pipeline_dirs() -> list[Path]:
    """Where the shipped pipelines are: in the wheel, or in a source checkout."""
    here = Path(__file__).resolve().parent
    return [p for p in (here / "pipelines", here.parents[1] / "pipelines") if p.is_dir()]


def _yaml_files(subdir: str | None) -> Iterator[Path]:
    seen: set[str] = set()
    for d in pipeline_dirs():
        for f in sorted((d / subdir if subdir else d).glob("*.yaml")):
            if f.stem not in seen:
                seen.add(f.stem)
                yield f


@hookimpl
def register_pipelines(register: Callable[[Path], None]) -> None:
    for path in _yaml_files(None):
        register(path)


@hookimpl
def register_degradations(register: Callable[[Path], None]) -> None:
    for path in _yaml_files(DEGRADE_DIR):
        register(path)
