"""Write docs/stages/README.md: every registered stage, metric and model, from the registry.

    python scripts/gen_stage_index.py        (tests/test_docs.py checks the file is current)
"""

from __future__ import annotations

from pathlib import Path

from restorekit.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "stages" / "README.md"


def render() -> str:
    registry = get_registry()
    docs = {p.stem for p in OUT.parent.glob("*.md")}
    lines = ["# Stages, metrics and models", "",
             "Generated from the plugin registry by `python scripts/gen_stage_index.py`; "
             "`restorekit stages ID` shows every parameter (type, default, range, help).", ""]
    families: dict[str, list[str]] = {}
    for sid in sorted(registry.stages):
        families.setdefault(sid.split(".")[0], []).append(sid)
    lines += ["## Stages", "", "| stage | plugin | summary |", "| --- | --- | --- |"]
    for family, ids in families.items():
        for sid in ids:
            link = f"[{sid}]({family}.md)" if family in docs else f"`{sid}`"
            lines.append(f"| {link} | {registry.stages.owner(sid)} | {registry.stages[sid].summary} |")
    lines += ["", "## Metrics (see ../metrics.md)", "", "| metric | unit | reference | summary |",
              "| --- | --- | --- | --- |"]
    for mid in sorted(registry.metrics):
        m = registry.metrics[mid]
        lines.append(f"| `{mid}` | {m.unit or '-'} | {'yes' if m.needs_reference else 'no'} | {m.summary} |")
    lines += ["", "## Trainable models (see ../models.md)", "", "| model | architecture | summary |",
              "| --- | --- | --- |"]
    for name in sorted(registry.models):
        spec = registry.models[name]
        lines.append(f"| `{name}` | {spec.architecture} | {spec.summary} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
