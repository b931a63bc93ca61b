"""The core's shape: no import circles (imports inside functions included), no stage module
imported by name, a size budget, and every module's job written down in docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"restorekit": ROOT / "core" / "restorekit", "restorekit_tools": ROOT / "plugins" / "restorekit_tools",
            "restorekit_plugins": ROOT / "plugins" / "restorekit_plugins"}
# Issue 13 brought the core to 3,478 lines (target: under 3,500). Issue 14 then added batch safety to the
# batch, which the core keeps: locking, resume, signals and the merged manifest (outdir.py), the executor
# contract and the CLI's batch options. The budget stops tooling from creeping back in.
# Issue 14's last part, hour-long files in bounded memory, is a core contract (the runner must read,
# hand on and write files in blocks): streaming.py (sources, spill files, the streamed chain), the
# block writer in io.py, `Stage.stream`, `Pipeline.whole_file_reason` and the chunk helper's `emit`
# (about 450 lines).
# Issue 17 made pipelines start from nothing and name their outputs: a source stage's run in the batch
# (no input file, named after what it makes, resumed by its settings) and `outputs:` in the graph
# (about 80 lines).
CORE_LINE_BUDGET = 4550


def modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, known: set[str]) -> set[str]:
    """Every module of `known` that `path` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    out: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node):
            out.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node):
            if node.module:
                out.add(node.module)
                out.update(f"{node.module}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return out & known


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles_in_the_core_and_the_tooling():
    mods = modules()
    graph = {m: imported(p, set(mods)) - {m} for m, p in mods.items()
             if not m.startswith("restorekit_plugins")}
    graph = {m: deps & set(graph) for m, deps in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# the only core modules that may refer to the tooling plugin, for the documented aliases
CORE_TO_TOOLS = {"restorekit": {"restorekit_tools.compare", "restorekit_tools.measure", "restorekit_tools.demo"},
                 "restorekit.testing": {"restorekit_tools.testing"}, "restorekit.batch": {"restorekit_tools.demo"},
                 "restorekit.cli": {"restorekit_tools.stage_docs"}}


def test_the_core_never_imports_a_plugin_module_by_name():
    mods = modules()
    for name, path in mods.items():
        if name.startswith("restorekit.") or name == "restorekit":
            hits = {m for m in imported(path, set(mods)) if m.startswith("restorekit_plugins")}
            assert not hits, f"{path}: the core imports {hits}"
            tools = {m for m in imported(path, set(mods)) if m.startswith("restorekit_tools")}
            assert tools <= CORE_TO_TOOLS.get(name, set()), f"{path}: the core imports {tools} (docs/architecture.md)"


def test_core_size_budget():
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGES["restorekit"].rglob("*.py"))
    assert lines < CORE_LINE_BUDGET, f"the core has {lines} lines; move tooling into a plugin"


def test_every_core_module_has_its_job_in_architecture_md():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in PACKAGES["restorekit"].rglob("*.py"):
        rel = path.relative_to(PACKAGES["restorekit"]).as_posix()
        if path.name in ("__init__.py", "__main__.py"):
            continue
        assert re.search(rf"^\| [^|]*`{re.escape(rel)}`", text, re.M), f"docs/architecture.md: no line for {rel}"
