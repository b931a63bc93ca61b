"""Training learned stages: data (split by file, decoded once, degraded on the fly) and the trainer.

Model families are contracts of the core (`restorekit.training.spec.ModelSpec`),
registered by plugins through `register_models`.
"""

from __future__ import annotations

import difflib

from restorekit.errors import UsageError
from restorekit.training.spec import ModelSpec


def get_model_spec(name: str) -> ModelSpec:
    """An instance of the registered model family `name`."""
    from restorekit.plugins import get_registry

    specs = get_registry().models
    if name not in specs:
        close = difflib.get_close_matches(name, list(specs), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown model '{name}'.{hint} Trainable models: {', '.join(sorted(specs)) or 'none'}")
    return specs[name]()
