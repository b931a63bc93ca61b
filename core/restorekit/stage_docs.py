"""Human-readable descriptions of stages and their parameters (`restorekit stages ID`)."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from restorekit.stage import Stage

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def param_rows(cls: type[Stage]) -> list[dict[str, Any]]:
    """One row per parameter: name, type, default, range, help."""
    rows = []
    for name, field in cls.Params.model_fields.items():
        bounds = []
        for meta in field.metadata:
            for attr, sym in _BOUNDS.items():
                value = getattr(meta, attr, None)
                if value is not None:
                    bounds.append(f"{sym} {value}")
            pattern = getattr(meta, "pattern", None)
            if pattern:
                bounds.append(f"matches {pattern}")
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        if str(annotation).startswith("typing.Literal"):
            type_name = "one of " + ", ".join(map(str, annotation.__args__))
        default = "(required)" if field.default is PydanticUndefined else repr(field.default)
        rows.append({"name": name, "type": type_name, "default": default,
                     "range": ", ".join(bounds), "help": field.description or ""})
    return rows


def describe_stage(cls: type[Stage], plugin: str | None = None) -> str:
    lines = [f"{cls.id}: {cls.summary}"]
    if plugin:
        lines.append(f"plugin: {plugin}")
    lines.append(f"accepts: {cls.accepts.describe()}")
    if cls.merges:
        lines.append("merges several inputs (give `input` a list)")
    doc = (cls.__doc__ or "").strip()
    if doc:
        lines += ["", doc]
    rows = param_rows(cls)
    lines += ["", "parameters:" if rows else "parameters: none"]
    for r in rows:
        rng = f"  [{r['range']}]" if r["range"] else ""
        lines.append(f"  {r['name']}: {r['type']} = {r['default']}{rng}")
        if r["help"]:
            lines.append(f"      {r['help']}")
    return "\n".join(lines)
