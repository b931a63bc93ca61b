"""Loading pipelines from YAML: find the file, validate everything, build a `Pipeline`.

Every problem is reported with the file, line, stage and key path, before any audio
is touched. `--set stage.param=value` overrides are applied to the parsed file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from restorekit.device import check_device_spec
from restorekit.errors import PipelineError, PluginError, Problem
from restorekit.yaml_lines import YamlSyntaxError, load_with_lines

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.plugins import Registry
    from restorekit.runner import Pipeline

TOP_KEYS = {
    "name": "a short name",
    "description": "one or two sentences",
    "device": "auto, cpu, cuda or cuda:N",
    "sample_rate": "output sample rate in Hz",
    "channels": "output channel count",
    "bit_depth": "output bit depth: 16, 24 or 32 (float)",
    "seed": "random seed for stages that use randomness",
    "stages": "the list of stages",
}
STAGE_KEYS = {"id", "use", "with", "input"}
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


def find_pipeline(path_or_name: str | Path, registry: Registry | None = None) -> Path:
    """A pipeline file from a path, or a registered pipeline or degradation preset by name."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.exists():
        raise PipelineError(f"{path}: is not a file")
    named = {**named_degradations(registry), **named_pipelines(registry)}
    if str(path_or_name) in named:
        return named[str(path_or_name)]
    shipped = named_pipelines(registry)
    close = difflib.get_close_matches(str(path_or_name), list(named), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise PipelineError(f"{path_or_name}: no such pipeline file or named pipeline.{hint} "
                        f"Named pipelines: {', '.join(shipped) or 'none found'} (`restorekit pipelines`)")


def find_degradation(preset: str | Path, registry: Registry | None = None) -> Path:
    """A degradation preset by name (`lowres-8k`) or any pipeline file that degrades audio."""
    path = Path(preset)
    if path.is_file():
        return path
    shipped = named_degradations(registry)
    if str(preset) in shipped:
        return shipped[str(preset)]
    close = difflib.get_close_matches(str(preset), list(shipped), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise PipelineError(f"{preset}: no such degradation preset or pipeline file.{hint} "
                        f"Presets: {', '.join(shipped) or 'none found'}")


def parse_overrides(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["stage.param=value", ...]` (values parsed as YAML) or a mapping, as {"stage.param": value}."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key.strip(". "):
            raise PipelineError(f"--set {item}: expected stage_id.param=value, e.g. --set gate.prop_decrease=0.6")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as exc:
            raise PipelineError(f"--set {item}: the value is not valid YAML ({exc})") from exc
    return out


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


def _build(data, lines, filename, overrides, device, registry) -> Pipeline:
    from restorekit.runner import Node, Pipeline

    problems: list[Problem] = []

    def line_of(path: tuple) -> int | None:
        while path and path not in lines:
            path = path[:-1]
        return lines.get(path, 1)

    def top_problem(key: str | None, message: str) -> None:
        problems.append(Problem(message, filename, line_of((key,) if key else ()), key=key))

    if not isinstance(data, dict):
        raise PipelineError(Problem("a pipeline is a YAML mapping with a `stages` list", filename, 1))
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), list(TOP_KEYS), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            top_problem(key, f"unknown key; {hint}valid keys: {', '.join(TOP_KEYS)}")
    name = data.get("name", Path(filename).stem)
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            top_problem(key, f"must be a string, got {value!r}")
    dev = device or data.get("device", "auto")
    if device is None and check_device_spec(dev):
        top_problem("device", check_device_spec(dev))
    for key, allowed in (("sample_rate", None), ("channels", None), ("bit_depth", BIT_DEPTHS), ("seed", None)):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            top_problem(key, f"must be a positive integer, got {value!r}")
        elif allowed and value not in allowed:
            top_problem(key, f"must be one of {', '.join(map(str, allowed))}, got {value}")
        elif key == "sample_rate" and not 1000 <= value <= 768000:
            top_problem(key, f"must be between 1000 and 768000 Hz, got {value}")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        top_problem("stages", "`stages` must be a non-empty list of stages (each with `use`)")
        raise PipelineError(problems)

    specs = []  # (index, node_id, use, params, input)
    used_ids: dict[str, int] = {}
    declared: set[str] = set()
    for i, raw in enumerate(stages_raw):
        here = ("stages", i)
        if not isinstance(raw, dict):
            problems.append(Problem("each stage is a mapping with `use` (and `id`, `with`, `input`)",
                                    filename, line_of(here)))
            continue
        use = raw.get("use")
        default_id = use.split(".")[-1] if isinstance(use, str) else f"stage{i + 1}"
        node_id = raw.get("id", default_id)
        if "id" not in raw:
            used_ids[node_id] = used_ids.get(node_id, 0) + 1
            if used_ids[node_id] > 1:
                node_id = f"{node_id}_{used_ids[node_id]}"
        node_id = str(node_id)
        declared.add(node_id)

        def stage_problem(key, message, path=None, use_=use, node_id_=node_id, here_=here):
            problems.append(Problem(message, filename, line_of((*here_, *(path or ((key,) if key else ())))),
                                    node_id_, use_ if isinstance(use_, str) else None, key))

        for key in raw:
            if key not in STAGE_KEYS:
                close = difflib.get_close_matches(str(key), list(STAGE_KEYS), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                stage_problem(key, f"unknown key; {hint}a stage has id, use, with and input")
        if not isinstance(use, str):
            stage_problem("use", "every stage needs `use: <stage id>` naming a registered stage "
                                 "(`restorekit stages` lists them)")
            continue
        params = raw.get("with")
        params = {} if params is None else params
        if not isinstance(params, dict):
            stage_problem("with", f"`with` must be a mapping of parameters, got {params!r}")
            continue
        inp = raw.get("input")
        if inp is not None and not (isinstance(inp, str) or
                                    (isinstance(inp, list) and all(isinstance(x, str) for x in inp))):
            stage_problem("input", f"`input` must be a stage id, 'stage.output', or a list of them; got {inp!r}")
            continue
        specs.append([i, node_id, use, dict(params), inp, stage_problem])

    # --set overrides
    by_id = {s[1]: s for s in specs}
    set_by: dict[tuple[str, tuple[str, ...]], str] = {}  # (node id, param path) -> the --set item
    for key, value in overrides.items():
        node_id, _, param_path = key.partition(".")
        if node_id not in by_id:
            if node_id in declared:
                continue  # that stage has a problem of its own, reported above
            close = difflib.get_close_matches(node_id, list(by_id), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(f"--set {key}={value}: no stage '{node_id}' in this pipeline.{hint} "
                                    f"Stage ids: {', '.join(by_id)}", filename))
            continue
        target = by_id[node_id][3]
        *parents, leaf = param_path.split(".")
        for depth, p in enumerate(parents):
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                where = ".".join(parents[:depth + 1])
                problems.append(Problem(f"--set {key}={value}: with.{where} is {target!r}, not a mapping, "
                                        "so it has no parameters to set", filename))
                break
        else:
            target[leaf] = value
            set_by[(node_id, tuple(param_path.split(".")))] = f"{key}={value}"

    ids, stages, inputs, indices, resolved_specs = [], [], [], [], []
    for i, node_id, use, params, inp, stage_problem in specs:
        try:
            cls = registry.get(use)
        except PluginError as exc:
            stage_problem("use", str(exc))
            continue
        try:
            stage = cls(params)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                key = "with." + ".".join(str(x) for x in loc) if loc else "with"
                message = _describe_error(err, cls)
                origin = next((item for (nid, path), item in set_by.items() if nid == node_id and loc
                               and tuple(map(str, loc[:len(path)])) == path[:len(loc)]), None)
                if origin:
                    message += f" (from --set {origin})"
                stage_problem(key, message, path=("with", *loc))
            continue
        ids.append(node_id)
        stages.append(stage)
        inputs.append(inp)
        indices.append(i)
        resolved_specs.append({"id": node_id, "use": use, "with": stage.params.model_dump(mode="json"),
                               **({"input": inp} if inp is not None else {})})
    if problems:
        raise PipelineError(problems)

    def locate(index, key):
        if index is None:
            return filename, line_of((key,) if key else ())
        return filename, line_of(("stages", indices[index], *((key,) if key else ())))

    spec = {
        "name": name, "description": description, "device": dev,
        **{k: data[k] for k in ("sample_rate", "channels", "bit_depth", "seed") if k in data},
        "stages": resolved_specs, "source": filename,
    }
    nodes = [Node(node_id, stage, inp) for node_id, stage, inp in zip(ids, stages, inputs)]
    return Pipeline(
        nodes, name=name, description=description, device=dev,
        sample_rate=data.get("sample_rate"), channels=data.get("channels"), bit_depth=data.get("bit_depth"),
        seed=data.get("seed", 0), spec=spec, locate=locate,
    )


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
        msg += f" (got {err.get('input')!r})"
    return msg
