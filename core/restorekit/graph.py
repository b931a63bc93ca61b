"""Graph resolution shared by YAML pipelines and pipelines built in code.

Inputs are references: `stage_id`, `stage_id.output_name` (a named output of a
splitting stage) or `input` (the pipeline's input). A stage without `input` takes the
previous stage's output. The last stage's output is the pipeline's output, unless the
pipeline names its outputs (`outputs: {raw: gen, restored: master}`: each a reference).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from restorekit.errors import PipelineError, Problem
from restorekit.stage import Stage

PIPELINE_INPUT = "input"
NODE_ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# locate(node_index, key) -> (file, line) of that key in the pipeline's source, if known
Locator = Callable[[int | None, str | None], tuple[str | None, int | None]]


def default_id(use: str, counts: dict[str, int]) -> str:
    """The id of a stage given none: the last part of its stage id, numbered from the second
    use on (`gain`, `gain_2`); `counts` carries the numbering across one pipeline."""
    base = use.split(".")[-1]
    counts[base] = counts.get(base, 0) + 1
    return base if counts[base] == 1 else f"{base}_{counts[base]}"


def _no_location(index: int | None, key: str | None) -> tuple[str | None, int | None]:
    return None, None


@dataclass(frozen=True)
class Ref:
    """A resolved input reference: a node (or the pipeline input) and an optional output name."""

    node: str
    output: str | None = None

    def __str__(self) -> str:
        return self.node if self.output is None else f"{self.node}.{self.output}"


@dataclass(frozen=True)
class Graph:
    """Nodes in execution order, each with its resolved input references."""

    order: tuple[int, ...]
    inputs: tuple[tuple[Ref, ...], ...]
    consumers: dict[Ref, int]
    output: int
    named: tuple[tuple[str, Ref], ...] = ()  #: the pipeline's named outputs, when it names them


def resolve(
    ids: Sequence[str],
    stages: Sequence[Stage],
    raw_inputs: Sequence[Sequence[str] | None],
    locate: Locator = _no_location,
    named_outputs: dict[str, str] | None = None,
) -> Graph:
    """Check references, merges, cycles and unused outputs; return the execution order."""
    problems: list[Problem] = []

    def problem(i: int | None, key: str | None, message: str) -> None:
        file, line = locate(i, key)
        stage = ids[i] if i is not None else None
        use = stages[i].id if i is not None else None
        problems.append(Problem(message, file, line, stage, use, key))

    if not ids:
        raise PipelineError(Problem("a pipeline needs at least one stage", *locate(None, "stages")))

    index: dict[str, int] = {}
    for i, node_id in enumerate(ids):
        if not NODE_ID_PATTERN.match(node_id) or node_id == PIPELINE_INPUT:
            problem(i, "id", f"'{node_id}' is not a valid stage id: use letters, digits, _ and -, "
                             f"not starting with a digit, and not '{PIPELINE_INPUT}'")
        elif node_id in index:
            problem(i, "id", f"duplicate stage id '{node_id}' (also used by stage {index[node_id] + 1}); "
                             "give each stage its own id")
        else:
            index[node_id] = i
    outputs = [s.output_names() for s in stages]

    all_inputs: list[tuple[Ref, ...]] = []
    for i, stage in enumerate(stages):
        raw = raw_inputs[i]
        explicit = raw is not None
        if stage.source:  # makes audio from its parameters: first, and takes nothing
            if i:
                problem(i, "use", "a source stage makes audio from its parameters and must be the first stage")
            if explicit:
                problem(i, "input", "a source stage takes no input; remove `input:`")
            all_inputs.append(())
            continue
        if raw is None:
            if i == 0:
                raw = [PIPELINE_INPUT]
            elif outputs[i - 1] is not None:
                names = ", ".join(f"{ids[i - 1]}.{n}" for n in outputs[i - 1])
                problem(i, "input", f"no `input` given, and the previous stage '{ids[i - 1]}' has several "
                                    f"outputs ({names}); name the one this stage takes")
                raw = []
            else:
                raw = [ids[i - 1]]
        refs: list[Ref] = []
        for text in raw:
            ref = _parse_ref(text, i, ids, index, outputs, problem)
            if ref is not None and ref.node == PIPELINE_INPUT and stages[0].source:
                problem(i, "input", f"this pipeline starts from the source stage '{ids[0]}' and has no input "
                                    "audio; take a stage's output instead")
            elif ref is not None:
                refs.append(ref)
        if not stage.merges and len(raw) > 1:
            problem(i, "input", f"this stage takes one input, got {len(raw)} ({', '.join(raw)}); "
                                "merge them first with a merging stage such as mix.sum")
        elif not stage.merges and explicit and not raw:
            problem(i, "input", "this stage takes one input, got an empty list; name a stage, "
                                f"'stage.output', or '{PIPELINE_INPUT}'")
        if stage.merges and explicit and len(raw) == 0:
            problem(i, "input", "a merging stage needs at least one input")
        elif stage.merges:
            message = stage.check_inputs(len(raw))
            if message:
                problem(i, "input", message)
        all_inputs.append(tuple(refs))

    if problems:
        raise PipelineError(problems)

    order = _topological_order(ids, all_inputs, problem)
    if problems:
        raise PipelineError(problems)

    named = _named_outputs(named_outputs, ids, index, outputs, stages[0].source, problem)
    consumers: dict[Ref, int] = {}
    for refs in [*all_inputs, [ref for _, ref in named]]:
        for ref in refs:
            consumers[ref] = consumers.get(ref, 0) + 1
    last = len(ids) - 1
    for i, node_id in enumerate(ids):
        if named_outputs is not None and not named:  # `outputs` itself is wrong: that is the problem to report
            break
        if i == last and named_outputs is None:
            continue
        names = outputs[i]
        if names is None:
            if Ref(node_id) not in consumers:
                where = "in `outputs`" if named_outputs is not None else "the last stage"
                problem(i, None, f"its output is never used: no later stage takes it and it is not {where}; "
                                 f"give a stage `input: {node_id}` or remove it")
        else:
            unused = [n for n in names if Ref(node_id, n) not in consumers]
            if unused:
                listed = ", ".join(f"{node_id}.{n}" for n in unused)
                problem(i, None, f"outputs never used: {listed}; route each into a stage (a mix.sum "
                                 "can take an untouched stem) or choose fewer outputs in its parameters")
    if problems:
        raise PipelineError(problems)
    return Graph(tuple(order), tuple(all_inputs), consumers, last, named)


def _named_outputs(named_outputs, ids, index, outputs, from_source, problem) -> tuple[tuple[str, Ref], ...]:
    """The checked `outputs:` mapping (name -> reference), in the order written."""
    if named_outputs is None:
        return ()
    if not isinstance(named_outputs, dict) or not named_outputs:
        problem(None, "outputs", "`outputs` maps output names to stages, e.g. {raw: gen, restored: dither}")
        return ()
    named = []
    for name, text in named_outputs.items():
        def located(_i, _key, message, name=name):
            problem(None, f"outputs.{name}", message)

        if not isinstance(name, str) or not NODE_ID_PATTERN.match(name):
            located(None, None, "an output name uses letters, digits, _ and -, not starting with a digit "
                                "(it becomes part of the file name: song.NAME.wav)")
            continue
        ref = _parse_ref(text, -1, ids, index, outputs, located)
        if ref is not None and ref.node == PIPELINE_INPUT and from_source:
            located(None, None, f"this pipeline starts from the source stage '{ids[0]}' and has no input audio")
        elif ref is not None:
            named.append((name, ref))
    return tuple(named)


def _parse_ref(text, i, ids, index, outputs, problem) -> Ref | None:
    if not isinstance(text, str) or not text:
        problem(i, "input", f"inputs are stage ids or 'stage.output' strings, got {text!r}")
        return None
    node, _, out = text.partition(".")
    if node == PIPELINE_INPUT:
        if out:
            problem(i, "input", f"'{text}': the pipeline input has no named outputs")
            return None
        return Ref(PIPELINE_INPUT)
    if node not in index:
        close = difflib.get_close_matches(node, list(index), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        problem(i, "input", f"'{text}' names no stage of this pipeline.{hint} "
                            f"Stages: {', '.join(ids)}; the pipeline's own input is '{PIPELINE_INPUT}'")
        return None
    j = index[node]
    if j == i:
        problem(i, "input", f"'{text}': a stage cannot take its own output")
        return None
    names = outputs[j]
    if names is None and out:
        problem(i, "input", f"'{text}': stage '{node}' has a single output, not named outputs; use '{node}'")
        return None
    if names is not None and not out:
        listed = ", ".join(f"{node}.{n}" for n in names)
        problem(i, "input", f"'{text}': stage '{node}' has several outputs; name one of {listed}")
        return None
    if names is not None and out not in names:
        listed = ", ".join(names)
        problem(i, "input", f"'{text}': stage '{node}' has no output '{out}'; its outputs are {listed}")
        return None
    return Ref(node, out or None)


def _topological_order(ids, all_inputs, problem) -> list[int]:
    """Kahn's algorithm, stable in file order; reports a cycle if there is one."""
    import heapq

    index = {node_id: i for i, node_id in enumerate(ids)}
    deps = [{index[r.node] for r in refs if r.node != PIPELINE_INPUT} for refs in all_inputs]
    users: list[list[int]] = [[] for _ in ids]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    waiting = [len(ds) for ds in deps]
    ready = [i for i, n in enumerate(waiting) if n == 0]  # a heap: the earliest ready stage in file order first
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(ids):
        done = set(order)
        stuck = [i for i in range(len(ids)) if i not in done]
        cycle = _find_cycle(stuck, deps)
        path = " -> ".join(ids[i] for i in cycle)
        problem(cycle[0], "input", f"the stages form a cycle: {path}; a stage's input must not "
                                   "depend on its own output")
    return order


def _find_cycle(stuck: list[int], deps: list[set[int]]) -> list[int]:
    start = stuck[0]
    path, seen = [start], {start}
    node = start
    while True:
        node = min(d for d in deps[node] if d in stuck)
        if node in seen:
            return path[path.index(node):] + [node]
        path.append(node)
        seen.add(node)
