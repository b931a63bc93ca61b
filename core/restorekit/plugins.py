"""Plugin manager: loads entry points of the `restorekit` group and keeps the stage registry.

Each entry point loads in its own try/except, so one broken plugin never takes the
CLI down: it is listed with its error, and a pipeline that needs one of its stages
fails with that error. `RESTOREKIT_STRICT_PLUGINS=1` makes any failure fatal.
"""

from __future__ import annotations

import difflib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

import pluggy

from restorekit import hookspecs
from restorekit.errors import PluginError
from restorekit.stage import check_stage_class

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.metrics import Metric
    from restorekit.stage import Stage
    from restorekit.training.spec import ModelSpec

ENTRY_POINT_GROUP = "restorekit"
STRICT_ENV = "RESTOREKIT_STRICT_PLUGINS"


@dataclass
class PluginInfo:
    """What `restorekit plugins` shows for one plugin."""

    name: str
    target: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    stages: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    def provides(self) -> str:
        """'3 stage(s), 2 metric(s)': what the plugin registered."""
        parts = [f"{len(items)} {kind}(s)" for kind, items in
                 (("stage", self.stages), ("metric", self.metrics), ("model", self.models)) if items]
        return ", ".join(parts) or "nothing registered"

    def add_error(self, message: str) -> None:
        """Record a problem; several problems of one plugin are joined with '; '."""
        self.error = message if not self.error else f"{self.error}; {message}"


@dataclass
class Registry:
    """Registered stage classes by id, plus what went wrong while loading."""

    stages: dict[str, type[Stage]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    manager: pluggy.PluginManager | None = None
    metrics: dict[str, type[Metric]] = field(default_factory=dict)
    metric_owners: dict[str, str] = field(default_factory=dict)
    models: dict[str, type[ModelSpec]] = field(default_factory=dict)
    model_owners: dict[str, str] = field(default_factory=dict)

    def get(self, stage_id: str) -> type[Stage]:
        """The stage class for `stage_id`, or a PluginError that says why it is not there."""
        if stage_id in self.conflicts:
            raise PluginError(self.conflict_message(stage_id))
        if stage_id in self.stages:
            return self.stages[stage_id]
        raise PluginError(self.unknown_message(stage_id))

    def conflict_message(self, stage_id: str) -> str:
        owners = " and ".join(f"'{p}'" for p in self.conflicts[stage_id])
        return f"stage '{stage_id}' is registered by both plugins {owners}; uninstall one of them"

    def unknown_message(self, stage_id: str) -> str:
        msg = f"unknown stage '{stage_id}'."
        close = difflib.get_close_matches(stage_id, list(self.stages), n=3, cutoff=0.6)
        if close:
            msg += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        failed = self.failed()
        if failed:
            names = ", ".join(f"'{p.name}' ({p.error.splitlines()[0]})" for p in failed)
            msg += f" These plugins failed to load and may provide it: {names}."
        return msg + " (`restorekit stages` lists them all)"

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _short_error(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last


def load_registry(strict: bool | None = None) -> Registry:
    """Load every plugin of the entry-point group and collect the stages they register."""
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "no")
    registry = Registry()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry.manager = pm

    eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    by_name: dict[str, PluginInfo] = {}
    for ep in eps:
        dist, version = _distribution_of(ep)
        first = by_name.get(ep.name)
        if first is not None:
            if first.target == ep.value and first.distribution == dist:
                continue  # the same distribution found twice on sys.path
            info = PluginInfo(ep.name, ep.value, dist, version)
            info.add_error(f"entry point name '{ep.name}' is also used by {_origin(first)}; "
                           f"the two plugins need different names (not loaded)")
            registry.plugins.append(info)
            if strict:
                raise PluginError(f"plugin '{ep.name}' from {_origin(info)}: {info.error} ({STRICT_ENV} is set)")
            continue
        info = PluginInfo(ep.name, ep.value, dist, version)
        by_name[ep.name] = info
        registry.plugins.append(info)
        try:
            module = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
            info.add_error(f"failed to import {ep.value}: {_short_error(exc)}")
            if strict:
                raise PluginError(f"plugin '{ep.name}' {info.error} ({STRICT_ENV} is set)") from exc
            continue
        try:
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl whose arguments are not in the spec
            info.add_error(f"invalid hook implementation: {' '.join(str(exc).split())}")
            if strict:
                raise PluginError(f"plugin '{ep.name}': {info.error} ({STRICT_ENV} is set)") from exc

    # pluggy's check_pending() stops at the first unknown hook; report every one, on its plugin.
    known = sorted(name for name, caller in vars(pm.hook).items() if not name.startswith("_") and caller.has_spec())
    for name, caller in list(vars(pm.hook).items()):
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            message = f"unknown hook '{name}': {hint}restorekit hooks are {', '.join(known)}"
            info = by_name.get(impl.plugin_name)
            if info is None:
                info = PluginInfo(impl.plugin_name, repr(impl.plugin))
                by_name[impl.plugin_name] = info
                registry.plugins.append(info)
            info.add_error(message)
            if strict:
                raise PluginError(f"plugin '{impl.plugin_name}': {message} ({STRICT_ENV} is set)")

    for impl in pm.hook.register_stages.get_hookimpls():
        info = by_name.get(impl.plugin_name)
        if info is None:  # registered on the manager by other means than an entry point
            info = by_name[impl.plugin_name] = PluginInfo(impl.plugin_name, repr(impl.plugin))
            registry.plugins.append(info)
        _collect_stages(registry, info, impl, strict)
    from restorekit.metrics import check_metric_class
    from restorekit.training.spec import check_model_spec

    for hook, kind, check in (("register_metrics", "metric", check_metric_class),
                              ("register_models", "model", check_model_spec)):
        for impl in getattr(pm.hook, hook).get_hookimpls():
            info = by_name.get(impl.plugin_name)
            if info is None:
                info = by_name[impl.plugin_name] = PluginInfo(impl.plugin_name, repr(impl.plugin))
                registry.plugins.append(info)
            _collect_named(registry, info, impl, strict, kind, check)
    return registry


def _collect_named(registry: Registry, info: PluginInfo, impl: pluggy.HookImpl, strict: bool,
                   kind: str, check) -> None:
    """Collect one plugin's metrics or models; an id another plugin registered first stays with it."""
    table, owners = getattr(registry, f"{kind}s"), getattr(registry, f"{kind}_owners")
    key = "id" if kind == "metric" else "name"
    errors: list[str] = []

    def register(cls) -> None:
        problems = check(cls)
        owner = owners.get(getattr(cls, key, None))
        if not problems and owner is not None and table[getattr(cls, key)] is not cls:
            problems = [f"{kind} '{getattr(cls, key)}' is already registered by plugin '{owner}'"]
        if problems:
            errors.extend(problems)
            return
        if owner is None:
            table[getattr(cls, key)] = cls
            owners[getattr(cls, key)] = info.name
            getattr(info, f"{kind}s").append(getattr(cls, key))

    _call_hook(info, impl, register, errors, strict)


def _call_hook(info: PluginInfo, impl: pluggy.HookImpl, register, errors: list[str], strict: bool) -> None:
    """Call one plugin's register hook; record what it raised and what `register` refused."""
    try:
        impl.function(register=register)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
        errors.append(f"{impl.function.__name__} raised {_short_error(exc)}")
    if errors:
        info.add_error("; ".join(errors))
        if strict:
            raise PluginError(f"plugin '{info.name}': {info.error}")


def _origin(info: PluginInfo) -> str:
    dist = f"distribution '{info.distribution}'" if info.distribution else "an unknown distribution"
    return f"{dist} ({info.target})"


def _collect_stages(registry: Registry, info: PluginInfo, impl: pluggy.HookImpl, strict: bool) -> None:
    errors: list[str] = []

    def register(cls: type[Stage]) -> None:
        problems = check_stage_class(cls)
        if problems:
            errors.extend(problems)
            return
        owner = registry.owners.get(cls.id)
        if owner == info.name:
            if registry.stages.get(cls.id, cls) is not cls:
                errors.append(f"registers two classes for stage '{cls.id}' "
                              f"({registry.stages[cls.id].__name__} and {cls.__name__})")
            return
        if owner is not None:
            registry.conflicts.setdefault(cls.id, [owner]).append(info.name)
            registry.stages.pop(cls.id, None)
            return
        registry.stages[cls.id] = cls
        registry.owners[cls.id] = info.name
        info.stages.append(cls.id)

    _call_hook(info, impl, register, errors, strict)
    for stage_id, owners in registry.conflicts.items():
        if strict and info.name in owners:
            raise PluginError(registry.conflict_message(stage_id))


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def reset_registry() -> None:
    """Forget the loaded registry so the next `get_registry()` loads plugins again."""
    global _registry
    _registry = None
