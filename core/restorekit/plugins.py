"""Plugin manager: loads entry points of the `restorekit` group and keeps the stage registry.

Each entry point loads in its own try/except, so one broken plugin never takes the
CLI down: it is listed with its error, and a pipeline that needs one of its stages
fails with that error. `RESTOREKIT_STRICT_PLUGINS=1` makes any failure fatal.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from restorekit import hookspecs
from restorekit.errors import PluginError
from restorekit.stage import check_stage_class

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.stage import Stage

log = logging.getLogger("restorekit")
ENTRY_POINT_GROUP = "restorekit"
STRICT_ENV = "RESTOREKIT_STRICT_PLUGINS"


KINDS = ("stage", "metric", "model", "pipeline", "degradation", "executor")
BUILTIN_DISTRIBUTION = "restorekit"


@dataclass
class PluginInfo:
    """What `restorekit plugins` shows for one plugin."""

    name: str
    target: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    provided: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    refused: list[str] = field(default_factory=list)  #: conflicts: ids another plugin registered first
    adds_commands: bool = False  #: implements `register_commands`

    builtin = property(lambda self: self.distribution == BUILTIN_DISTRIBUTION)
    stages = property(lambda self: self.provided["stage"])
    metrics = property(lambda self: self.provided["metric"])
    models = property(lambda self: self.provided["model"])

    def provides(self) -> str:
        """'3 stage(s), 2 metric(s)': what the plugin registered."""
        parts = [f"{len(items)} {kind}(s)" for kind, items in self.provided.items() if items]
        return ", ".join(parts + ["commands"] * self.adds_commands) or "nothing registered"

    def add_error(self, message: str) -> None:
        """Record a problem; several problems of one plugin are joined with '; '."""
        self.error = message if not self.error else f"{self.error}; {message}"

    def origin(self) -> str:
        dist = f"distribution '{self.distribution}'" if self.distribution else "an unknown distribution"
        return f"{dist} ({self.target})"


@dataclass
class Entry:
    """One registered item and the plugin (entry point name) that registered it."""

    value: Any
    plugin: str


class Table(Mapping):
    """The registered items of one kind, by id: one checker, one conflict rule for every kind.

    The first registration of an id wins; a later one from another plugin is refused
    with a message naming both. Built-in plugins load first, so no installed package
    can take over a built-in id.
    """

    def __init__(self, kind: str, check: Callable[[Any], list[str]], key: Callable[[Any], str]) -> None:
        self.kind, self.check, self.key = kind, check, key
        self.entries: dict[str, Entry] = {}
        self.siblings: list[Table] = []

    def __getitem__(self, name: str) -> Any:
        return self.entries[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def owner(self, name: str) -> str | None:
        """The plugin that registered `name`, or None."""
        entry = self.entries.get(name)
        return entry.plugin if entry else None

    def add(self, value: Any, plugin: str) -> tuple[list[str], str | None]:
        """Register `value` for `plugin`: (contract problems, the plugin already holding its id); both
        empty when it took. Names are shared with the `siblings` tables (pipelines and presets)."""
        problems = self.check(value)
        if problems:
            return problems, None
        name = self.key(value)
        held = self.entries.get(name) or next((t.entries[name] for t in self.siblings if name in t.entries), None)
        if held is None:
            self.entries[name] = Entry(value, plugin)
            return [], None
        if held.plugin != plugin:
            return [], held.plugin
        if held.value != value:
            return [f"registers two {self.kind}s named '{name}' ({_label(held.value)} and {_label(value)})"], None
        return [], None


def _label(value: Any) -> str:
    return getattr(value, "__name__", None) or str(value)


def check_pipeline_file(path: Any) -> list[str]:
    """Reasons `path` cannot be registered as a pipeline or preset (a YAML file named like `zero_shot`)."""
    if not isinstance(path, Path):
        return [f"{path!r} is not a pathlib.Path to a pipeline YAML file"]
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return [f"{path} is not a .yaml file"]
    if not PIPELINE_NAME_PATTERN.match(path.stem):
        return [f"{path.name}: a pipeline name is letters, digits, '_' and '-' (e.g. 'zero_shot')"]
    return []


PIPELINE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class Registry:
    """Everything the plugins registered, one `Table` per kind, plus what went wrong while loading."""

    plugins: list[PluginInfo] = field(default_factory=list)
    manager: pluggy.PluginManager | None = None
    tables: dict[str, Table] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from restorekit.metrics import check_metric_class
        from restorekit.training.spec import check_model_spec

        for kind, check, key in (("stage", check_stage_class, lambda c: c.id),
                                 ("metric", check_metric_class, lambda c: c.id),
                                 ("model", check_model_spec, lambda c: c.name),
                                 ("pipeline", check_pipeline_file, lambda p: p.stem),
                                 ("degradation", check_pipeline_file, lambda p: p.stem),
                                 ("executor", _check_executor, lambda c: c.name)):
            self.tables.setdefault(kind, Table(kind, check, key))
        self.pipelines.siblings, self.degradations.siblings = [self.degradations], [self.pipelines]  # one namespace

    stages = property(lambda self: self.tables["stage"])
    metrics = property(lambda self: self.tables["metric"])
    models = property(lambda self: self.tables["model"])
    pipelines = property(lambda self: self.tables["pipeline"])
    degradations = property(lambda self: self.tables["degradation"])

    def get(self, stage_id: str) -> type[Stage]:
        """The stage class for `stage_id`, or a PluginError that says why it is not there."""
        if stage_id in self.stages:
            return self.stages[stage_id]
        raise PluginError(self.unknown_message(stage_id))

    def conflicts(self) -> list[str]:
        """Every refused registration, as '<plugin>: <message>'."""
        return [f"{p.name}: {message}" for p in self.plugins for message in p.refused]

    def unknown_message(self, stage_id: str) -> str:
        msg = f"unknown stage '{stage_id}'."
        close = difflib.get_close_matches(stage_id, list(self.stages), n=3, cutoff=0.6)
        if close:
            msg += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        failed = [p for p in self.plugins if p.error]
        if failed:
            names = ", ".join(f"'{p.name}' ({p.error.splitlines()[0]})" for p in failed)
            msg += f" These plugins failed to load and may provide it: {names}."
        return msg + " (`restorekit stages` lists them all)"


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _short_error(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last


def load_registry(strict: bool | None = None) -> Registry:
    """Load every plugin of the entry-point group and collect what they register.

    restorekit's own plugins load first, then the others by entry point name.
    """
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "no")
    registry = Registry()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry.manager = pm

    eps = sorted(((ep, *_distribution_of(ep)) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)),
                 key=lambda item: (item[1] != BUILTIN_DISTRIBUTION, item[0].name))
    by_name: dict[str, PluginInfo] = {}
    for ep, dist, version in eps:
        first = by_name.get(ep.name)
        if first is not None:
            if first.target == ep.value and first.distribution == dist:
                continue  # the same distribution found twice on sys.path
            info = PluginInfo(ep.name, ep.value, dist, version)
            info.add_error(f"entry point name '{ep.name}' is also used by {first.origin()}; "
                           f"the two plugins need different names (not loaded)")
            registry.plugins.append(info)
            _fail_if_strict(strict, f"plugin '{ep.name}' from {info.origin()}: {info.error}")
            continue
        info = PluginInfo(ep.name, ep.value, dist, version)
        by_name[ep.name] = info
        registry.plugins.append(info)
        try:
            module = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
            info.add_error(f"failed to import {ep.value}: {_short_error(exc)}")
            _fail_if_strict(strict, f"plugin '{ep.name}' {info.error}", exc)
            continue
        try:
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl whose arguments are not in the spec
            info.add_error(f"invalid hook implementation: {' '.join(str(exc).split())}")
            _fail_if_strict(strict, f"plugin '{ep.name}': {info.error}", exc)

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
            _info_for(registry, by_name, impl).add_error(message)
            _fail_if_strict(strict, f"plugin '{impl.plugin_name}': {message}")

    for impl in pm.hook.register_commands.get_hookimpls():
        _info_for(registry, by_name, impl).adds_commands = True
    # Plugin by plugin in load order (built-ins first), all kinds of each, whatever pluggy's own
    # order (tryfirst/trylast change it): that order alone decides conflicts.
    impls = {kind: {impl.plugin_name: impl for impl in getattr(pm.hook, REGISTER_HOOKS[kind]).get_hookimpls()}
             for kind in KINDS}
    for kind_impls in impls.values():
        for impl in kind_impls.values():
            _info_for(registry, by_name, impl)  # registered on the manager by other means than an entry point
    done: set[str] = set()
    for info in list(registry.plugins):  # a name refused as a duplicate entry point comes after the loaded one
        if info.name in done:
            continue
        done.add(info.name)
        for kind in KINDS:
            if info.name in impls[kind]:
                _collect(registry, kind, info, impls[kind][info.name], strict)
    return registry


REGISTER_HOOKS = {"stage": "register_stages", "metric": "register_metrics", "model": "register_models",
                  "pipeline": "register_pipelines", "degradation": "register_degradations",
                  "executor": "register_executors"}


def _check_executor(cls: Any) -> list[str]:
    from restorekit.executor import check_executor_class

    return check_executor_class(cls)


def _info_for(registry: Registry, by_name: dict[str, PluginInfo], impl: pluggy.HookImpl) -> PluginInfo:
    """The PluginInfo of a hook implementation (made for plugins registered by other means than entry points)."""
    info = by_name.get(impl.plugin_name)
    if info is None:
        info = by_name[impl.plugin_name] = PluginInfo(impl.plugin_name, repr(impl.plugin))
        registry.plugins.append(info)
    return info


def _collect(registry: Registry, kind: str, info: PluginInfo, impl: pluggy.HookImpl, strict: bool) -> None:
    """Call one plugin's register hook for `kind`; record what was refused and why."""
    table = registry.tables[kind]
    errors: list[str] = []
    if impl.hookwrapper or getattr(impl, "wrapper", False):
        errors.append(f"{impl.function.__name__} is declared as a hook wrapper; register hooks must be plain")

    def register(value: Any) -> None:
        problems, holder = table.add(value, info.name)
        errors.extend(problems)
        if holder is not None:
            owner = next((p for p in registry.plugins if p.name == holder), None)
            where = f" ({owner.origin().split(' (')[0]})" if owner is not None else ""
            message = (f"{kind} '{table.key(value)}' is already registered by plugin '{holder}'{where}; "
                       "this registration was refused (rename it)")
            info.refused.append(message)
            log.warning("plugin '%s' (%s): %s", info.name, info.origin(), message)
        elif not problems and table.key(value) not in info.provided[kind]:
            info.provided[kind].append(table.key(value))

    if not errors:
        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
            errors.append(f"{impl.function.__name__} raised {_short_error(exc)}")
    if errors:
        info.add_error("; ".join(errors))
        _fail_if_strict(strict, f"plugin '{info.name}': {info.error}")
    if info.refused:
        _fail_if_strict(strict, f"plugin '{info.name}': {'; '.join(info.refused)}")


def _fail_if_strict(strict: bool, message: str, cause: BaseException | None = None) -> None:
    if strict:
        raise PluginError(f"{message} ({STRICT_ENV} is set)") from cause


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
