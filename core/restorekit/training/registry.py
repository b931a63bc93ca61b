"""Trainable model families registered by plugins through `register_models`."""

from __future__ import annotations

import difflib

from restorekit.errors import UsageError
from restorekit.training.spec import ModelSpec


def model_specs() -> dict[str, type[ModelSpec]]:
    """Every registered model family by name; a plugin whose hook fails is skipped (and logged)."""
    import logging

    from restorekit.plugins import get_registry

    specs: dict[str, type[ModelSpec]] = {}
    pm = get_registry().manager
    if pm is None:
        return specs
    for impl in pm.hook.register_models.get_hookimpls():
        def register(cls: type[ModelSpec]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, ModelSpec) and cls.name):
                raise TypeError(f"{cls!r} is not a named restorekit ModelSpec")
            specs[cls.name] = cls
        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
            logging.getLogger("restorekit").warning("plugin '%s' failed to register models: %s",
                                                    impl.plugin_name, exc)
    return specs


def get_model_spec(name: str) -> ModelSpec:
    specs = model_specs()
    if name not in specs:
        close = difflib.get_close_matches(name, list(specs), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown model '{name}'.{hint} Trainable models: {', '.join(sorted(specs)) or 'none'}")
    return specs[name]()
