"""The one checker behind every registrable kind: stages, metrics, model families.

Each contract (`check_stage_class`, `check_metric_class`, `check_model_spec`) is this
function with its own base class, naming rule and parameter model, plus a few checks
of its own. No torch import.
"""

from __future__ import annotations

import re
from typing import Any


def check_contract(cls: Any, base: type, base_name: str, *, name_attr: str, pattern: re.Pattern[str],
                   example: str, params_attr: str, params_base: type, params_name: str,
                   summary: bool = True) -> list[str]:
    """Reasons `cls` does not fulfil the contract of `base` (empty when it does).

    `base_name` and `params_name` are the public names the messages use. `name_attr` must
    match `pattern` (`example` shows a good one); `summary` must be one non-empty line;
    `params_attr` must be a subclass of `params_base` rejecting unknown keys.
    """
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return [f"{cls!r} is not a subclass of {base_name}"]
    problems = []
    name = getattr(cls, name_attr, None)
    if not (isinstance(name, str) and pattern.match(name)):
        problems.append(f"{cls.__name__}.{name_attr} {name!r} must look like {example!r} "
                        "(lowercase letters, digits, _)")
    text = getattr(cls, "summary", "")
    if summary and (not isinstance(text, str) or not text or "\n" in text):
        problems.append(f"{cls.__name__}.summary must be one non-empty line")
    params = getattr(cls, params_attr, None)
    if not (isinstance(params, type) and issubclass(params, params_base)):
        problems.append(f"{cls.__name__}.{params_attr} must subclass {params_name}")
    elif params.model_config.get("extra") != "forbid":
        problems.append(f"{cls.__name__}.{params_attr} must reject unknown keys (extra='forbid')")
    return problems
