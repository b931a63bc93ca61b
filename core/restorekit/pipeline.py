"""Loading pipelines from YAML: find the file, validate everything, build a `Pipeline`.

Every problem is reported with the file, line, stage and key path, before any audio
is touched. `--set stage.param=value` overrides are applied to the parsed file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from restorekit import graph
from restorekit.device import check_device_spec
from restorekit.errors import PipelineError, PluginError, Problem, UsageError
from restorekit.yaml_lines import YamlSyntaxError, load_with_lines

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.plugins import Registry
    from restorekit.runner import Node, Pipeline

TOP_KEYS = {
    "name": "a short name",
    "description": "one or two sentences",
    "device": "auto, cpu, cuda or cuda:N",
    "sample_rate": "output sample rate in Hz",
    "channels": "output channel count",
    "bit_depth": "output bit depth: 16, 24 or 32 (float)",
    "seed": "random seed for stages that use randomness",
    "stages": "the list of stages",
    "outputs": "named outputs, each a stage or 'stage.output' (default: the last stage's)",
}
STAGE_KEYS = {"id", "use", "with", "input"}
MAX_STAGES = 10_000  #: validation is linear in the stage count; real pipelines have a handful
BIT_DEPTHS = (16, 24, 32)


def named_pipelines(registry: Registry | None = None) -> dict[str, Path]:
    """Pipelines usable by name: restorekit's own and those plugins ship (`register_pipelines`)."""
    return dict(sorted((registry or _registry()).pipelines.items()))


def named_degradations(registry: Registry | None = None) -> dict[str, Path]:
    """Degradation presets usable by name (`register_degradations`): `lowres-8k`, a plugin's, ..."""
    return dict(sorted((registry or _registry()).degradations.items()))


def _registry() -> Registry:
    from restorekit.plugins import get_registry

    return get_registry()


def describe_file(path: Path) -> str:
    """A pipeline file's `description` on one line, "(unreadable)" when it cannot be parsed (for listings)."""
    try:
        data, _ = load_with_lines(path.read_text(encoding="utf-8"))
        return " ".join(str((data or {}).get("description", "")).split())
    except Exception:  # noqa: BLE001 - a broken file is listed, not fatal
        return "(unreadable)"


def find_pipeline(path_or_name: str | Path, registry: Registry | None = None, *, presets_only: bool = False) -> Path:
    """A pipeline file from a path, or a registered pipeline or degradation preset by name
    (only presets with `presets_only`, as `find_degradation`)."""
    path, name = Path(path_or_name), str(path_or_name)
    if path.is_file():
        return path
    if path.exists():
        raise PipelineError(f"{path}: is not a file")
    shown = named_degradations(registry) if presets_only else named_pipelines(registry)
    named = shown if presets_only else {**named_degradations(registry), **shown}  # one namespace
    if name in named:
        return named[name]
    close = difflib.get_close_matches(name, list(named), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    what = ("degradation preset or pipeline file", "Presets") if presets_only else (
        "pipeline file or named pipeline", "Named pipelines")
    raise PipelineError(f"{name}: no such {what[0]}.{hint} {what[1]}: {', '.join(shown) or 'none found'}")


def find_degradation(preset: str | Path, registry: Registry | None = None) -> Path:
    """A degradation preset by name (`lowres-8k`) or any pipeline file that degrades audio."""
    return find_pipeline(preset, registry, presets_only=True)


def parse_assignments(items: Sequence[str] | None, form: str = "stage_id.param=value",
                      example: str = "gate.prop_decrease=0.6", error: type[UsageError] = UsageError) -> dict[str, Any]:
    """`--set` items (`["a.b=value", ...]`) as {"a.b": value}, values parsed as safe YAML.

    Shared by pipeline overrides and metric parameters; `form` and `example` go into the
    message of `error` for an item that is not `X.Y=VALUE`.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        head, dot, tail = key.strip().rpartition(".")
        if not sep or not dot or not head.strip(".") or not tail:
            raise error(f"--set {item}: expected {form}, e.g. --set {example}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as exc:
            raise error(f"--set {item}: the value is not valid YAML ({exc})") from exc
    return out


def parse_overrides(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["stage.param=value", ...]` (values parsed as YAML) or a mapping, as {"stage.param": value}."""
    if isinstance(items, Mapping):
        return dict(items)
    return parse_assignments(items, error=PipelineError)


def load_pipeline(
    path_or_name: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    device: str | None = None,
    registry: Registry | None = None,
) -> Pipeline:
    """Load and validate a YAML pipeline; raises PipelineError listing every problem."""
    path = find_pipeline(path_or_name, registry)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read: {exc}") from exc
    return pipeline_from_text(text, str(path), overrides, device=device, registry=registry)


def pipeline_from_text(
    text: str,
    filename: str = "<pipeline>",
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    device: str | None = None,
    registry: Registry | None = None,
) -> Pipeline:
    """Validate a pipeline given as YAML text (see `load_pipeline`)."""
    from restorekit.plugins import get_registry

    registry = registry or get_registry()
    try:
        data, lines = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise PipelineError(Problem(f"invalid YAML: {exc}", filename, exc.line)) from exc
    return _build(data, lines, filename, parse_overrides(overrides), device, registry)


@dataclass
class StageSpec:
    """One entry of `stages:` as written (after `--set`): where it is, its node id, stage id, params, input."""

    index: int
    node_id: str
    use: str
    params: dict[str, Any]
    input: str | list[str] | None
    set_by: dict[tuple[str, ...], str] = field(default_factory=dict)  #: param path -> the --set item


class _Builder:
    """Validates parsed YAML step by step, collecting every located problem, and builds the Pipeline."""

    def __init__(self, data: Any, lines: dict[tuple, int], filename: str, registry: Registry) -> None:
        self.data, self.lines, self.filename, self.registry = data, lines, filename, registry
        self.problems: list[Problem] = []
        self.declared: set[str] = set()  # node ids, also of stages with problems

    def line_of(self, path: tuple) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, message: str, path: tuple = (), key: str | None = None, spec: StageSpec | None = None,
                node_id: str | None = None, use: Any = None) -> None:
        if spec is not None:
            node_id, use = spec.node_id, spec.use
        self.problems.append(Problem(message, self.filename, self.line_of(path), node_id,
                                     use if isinstance(use, str) else None, key))

    # -- top level ---------------------------------------------------------------------
    def top_level(self, device: str | None) -> dict[str, Any]:
        """The checked top-level settings (name, description, device, output format, seed)."""
        data = self.data
        if not isinstance(data, dict):
            raise PipelineError(Problem("a pipeline is a YAML mapping with a `stages` list", self.filename, 1))
        for key in data:
            if key not in TOP_KEYS:
                close = difflib.get_close_matches(str(key), list(TOP_KEYS), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.problem(f"unknown key; {hint}valid keys: {', '.join(TOP_KEYS)}", (key,), key)
        settings = {"name": data.get("name", Path(self.filename).stem), "description": data.get("description", ""),
                    "device": device or data.get("device", "auto")}
        for key in ("name", "description"):
            if not isinstance(settings[key], str):
                self.problem(f"must be a string, got {_short(settings[key])}", (key,), key)
        if device is None and check_device_spec(settings["device"]):
            self.problem(check_device_spec(settings["device"]), ("device",), "device")
        for key in ("sample_rate", "channels", "bit_depth", "seed"):
            value = data.get(key)
            if value is None:
                continue
            settings[key] = value
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
                self.problem(f"must be a positive integer, got {_short(value)}", (key,), key)
            elif key == "bit_depth" and value not in BIT_DEPTHS:
                self.problem(f"must be one of {', '.join(map(str, BIT_DEPTHS))}, got {value}", (key,), key)
            elif key == "sample_rate" and not 1000 <= value <= 768000:
                self.problem(f"must be between 1000 and 768000 Hz, got {value}", (key,), key)
        return settings

    # -- stages ------------------------------------------------------------------------
    def stage_specs(self) -> list[StageSpec]:
        """Each well-formed entry of `stages:`; malformed ones become problems."""
        raw_stages = self.data.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            self.problem("`stages` must be a non-empty list of stages (each with `use`)", ("stages",), "stages")
            raise PipelineError(self.problems)
        if len(raw_stages) > MAX_STAGES:
            self.problem(f"{len(raw_stages)} stages; a pipeline may have at most {MAX_STAGES}", ("stages",), "stages")
            raise PipelineError(self.problems)
        counts: dict[str, int] = {}
        specs = []
        for i, raw in enumerate(raw_stages):
            here = ("stages", i)
            if not isinstance(raw, dict):
                self.problem("each stage is a mapping with `use` (and `id`, `with`, `input`)", here)
                continue
            use = raw.get("use")
            if "id" in raw:
                node_id = str(raw["id"])
            else:
                node_id = graph.default_id(use, counts) if isinstance(use, str) else f"stage{i + 1}"
            self.declared.add(node_id)
            spec = self._stage_spec(i, raw, node_id, use)
            if spec is not None:
                specs.append(spec)
        return specs

    def _stage_spec(self, i: int, raw: dict, node_id: str, use: Any) -> StageSpec | None:
        here = ("stages", i)
        for key in raw:
            if key not in STAGE_KEYS:
                close = difflib.get_close_matches(str(key), list(STAGE_KEYS), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.problem(f"unknown key; {hint}a stage has id, use, with and input", (*here, key), key,
                             node_id=node_id, use=use)
        if not isinstance(use, str):
            self.problem("every stage needs `use: <stage id>` naming a registered stage (`restorekit stages` "
                         "lists them)", (*here, "use"), "use", node_id=node_id, use=use)
            return None
        params = {} if raw.get("with") is None else raw["with"]
        if not isinstance(params, dict):
            self.problem(f"`with` must be a mapping of parameters, got {_short(params)}", (*here, "with"), "with",
                         node_id=node_id, use=use)
            return None
        inp = raw.get("input")
        if inp is not None and not (isinstance(inp, str) or
                                    (isinstance(inp, list) and all(isinstance(x, str) for x in inp))):
            self.problem(f"`input` must be a stage id, 'stage.output', or a list of them; got {_short(inp)}",
                         (*here, "input"), "input", node_id=node_id, use=use)
            return None
        return StageSpec(i, node_id, use, dict(params), inp)

    def apply_overrides(self, specs: list[StageSpec], overrides: dict[str, Any]) -> None:
        """Write each `--set node.param[.sub]=value` into its stage's params."""
        by_id = {spec.node_id: spec for spec in specs}
        for key, value in overrides.items():
            node_id, _, param_path = key.partition(".")
            spec = by_id.get(node_id)
            if spec is None:
                if node_id not in self.declared:  # else that stage has a problem of its own, reported
                    close = difflib.get_close_matches(node_id, list(by_id), n=1)
                    hint = f" Did you mean '{close[0]}'?" if close else ""
                    self.problems.append(Problem(f"--set {key}={value}: no stage '{node_id}' in this pipeline."
                                                 f"{hint} Stage ids: {', '.join(by_id)}", self.filename))
                continue
            target = spec.params
            *parents, leaf = param_path.split(".")
            for depth, part in enumerate(parents):
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    where = ".".join(parents[:depth + 1])
                    self.problems.append(Problem(f"--set {key}={value}: with.{where} is {_short(target)}, not a mapping, "
                                                 "so it has no parameters to set", self.filename))
                    break
            else:
                target[leaf] = value
                spec.set_by[tuple(param_path.split("."))] = f"{key}={value}"

    def make_node(self, spec: StageSpec) -> Node | None:
        """The spec's stage, built from its validated params; None (and problems) when it cannot be."""
        from restorekit.runner import Node

        here = ("stages", spec.index)
        try:
            cls = self.registry.get(spec.use)
        except PluginError as exc:
            self.problem(str(exc), (*here, "use"), "use", spec)
            return None
        try:
            stage = cls(spec.params)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                message = _describe_error(err, cls)
                origin = next((item for path, item in spec.set_by.items()
                               if loc and tuple(map(str, loc[:len(path)])) == path[:len(loc)]), None)
                if origin:
                    message += f" (from --set {origin})"
                key = "with." + ".".join(str(x) for x in loc) if loc else "with"
                self.problem(message, (*here, "with", *loc), key, spec)
            return None
        return Node(spec.node_id, stage, spec.input, self.registry.stages.owner(spec.use))


def _build(data, lines, filename, overrides, device, registry) -> Pipeline:
    from restorekit.runner import Pipeline

    builder = _Builder(data, lines, filename, registry)
    settings = builder.top_level(device)
    specs = builder.stage_specs()
    builder.apply_overrides(specs, overrides)
    built = [(spec, builder.make_node(spec)) for spec in specs]
    built = [(spec, node) for spec, node in built if node is not None]
    if builder.problems:
        raise PipelineError(builder.problems)

    def locate(index, key):
        path = (key,) if key and index is not None else tuple(key.split(".", 1)) if key else ()
        if index is not None:
            path = ("stages", built[index][0].index, *path)
        return filename, builder.line_of(path)

    stages = [{"id": spec.node_id, "use": spec.use, "with": node.stage.params.model_dump(mode="json"),
               **({"input": spec.input} if spec.input is not None else {})} for spec, node in built]
    spec = {**{k: v for k, v in settings.items() if k in ("name", "description", "device")},
            **{k: settings[k] for k in ("sample_rate", "channels", "bit_depth", "seed") if k in settings},
            "stages": stages, "source": filename}
    outputs = data.get("outputs")
    if outputs is not None:
        spec["outputs"] = outputs
    return Pipeline([node for _, node in built], name=settings["name"], description=settings["description"],
                    device=settings["device"], sample_rate=settings.get("sample_rate"),
                    channels=settings.get("channels"), bit_depth=settings.get("bit_depth"),
                    seed=settings.get("seed", 0), spec=spec, locate=locate, outputs=outputs)


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value for a message, cut to `limit` characters (hostile files hold huge values)."""
    import reprlib

    text = reprlib.repr(value)  # bounded work even on huge or deeply nested values
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe_error(err: dict, cls) -> str:
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        fields = list(cls.Params.model_fields)
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (f"unknown parameter; {hint}{cls.id} takes: {', '.join(fields) or 'no parameters'} "
                f"(`restorekit stages {cls.id}` describes them)")
    msg = err["msg"]
    if err["type"] != "missing":
        msg += f" (got {_short(err.get('input'))})"
    return msg
