"""Human-readable descriptions of stages and their parameters (`restorekit stages ID`)."""

from __future__ import annotations

import inspect
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic_core import PydanticUndefined

from restorekit.stage import Stage

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def type_label(annotation: Any) -> str:
    """A short readable type: `float | None`, `list[float]`, `one of a, b` (Annotated metadata dropped)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_label(args[0])
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, UnionType):
        return " | ".join(type_label(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_label(a) for a in args)}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


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
        type_name = type_label(field.annotation)
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
    doc = inspect.cleandoc(cls.__doc__ or "")
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
