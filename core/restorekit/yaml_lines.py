"""Safe YAML loading that remembers the line of every key, within limits hostile files cannot break.

An alias is never expanded here (its lines are its anchor's); what a document would expand
to is measured per node and refused above `MAX_VALUES`, as are recursive aliases and
nesting deeper than `MAX_DEPTH`, each with its line, before anything else sees the data.
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[Any, ...]
MAX_BYTES = 1_000_000  #: a pipeline file larger than this is refused (real ones are a few kB)
MAX_VALUES = 200_000  #: scalars, lists and mappings the document expands to, aliases counted in full
MAX_DEPTH = 64  #: nesting levels of lists and mappings


class YamlSyntaxError(Exception):
    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


def load_with_lines(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML safely; return the data and a map from key path to 1-based line."""
    if len(text) > MAX_BYTES:
        raise YamlSyntaxError(f"the file has {len(text)} characters; a pipeline may have at most {MAX_BYTES}", 1)
    try:
        loader = yaml.SafeLoader(text)  # the reader refuses control characters right here
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_first_line(exc), _line_of(exc, text)) from exc
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # PyYAML composes recursively
            raise YamlSyntaxError(f"nesting is too deep (a pipeline nests at most {MAX_DEPTH} levels)",
                                  loader.line + 1) from None
        if node is None:
            return None, {}
        lines: dict[Path_, int] = {}
        _walk(node, lines)
        _check_expanded_size(node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlSyntaxError(f"{exc.problem or exc}" + (f" ({exc.context})" if exc.context else ""), line) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_first_line(exc), _line_of(exc, text)) from exc
    finally:
        loader.dispose()
    return data, lines


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__


def _line_of(exc: Exception, text: str) -> int | None:
    position = getattr(exc, "position", None)  # a ReaderError's character offset
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else None


def _walk(root: yaml.Node, lines: dict[Path_, int]) -> None:
    """Record the line of every key path, each node once (an alias is not entered again); iterative."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) or id(node) in seen:
            continue
        seen.add(id(node))
        if len(path) >= MAX_DEPTH:
            raise YamlSyntaxError(f"nesting is too deep (a pipeline nests at most {MAX_DEPTH} levels)",
                                  node.start_mark.line + 1)
        children = []
        if isinstance(node, yaml.MappingNode):
            keys: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                if key in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first on line {keys[key]})", key_node.start_mark)
                keys[key] = key_node.start_mark.line + 1
                lines.setdefault((*path, key), key_node.start_mark.line + 1)
                children.append((value_node, (*path, key)))
        else:
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                children.append((item, (*path, i)))
        stack.extend(reversed(children))  # in file order: an anchor is walked where it is defined


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a recursive alias, or a document that expands to more than MAX_VALUES values.

    Sizes are memoized per node, so this costs one visit per distinct node however
    often aliases repeat them.
    """
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        children = [v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            active.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in active:  # an ancestor: the alias is inside its own anchor
                    raise YamlSyntaxError("a recursive alias (an anchor used inside itself); write the value out",
                                          child.start_mark.line + 1)
                if id(child) not in size:
                    stack.append((child, False))
            continue
        active.discard(key)
        size[key] = 1 + sum(size[id(c)] for c in children)
        if size[key] > MAX_VALUES:
            raise YamlSyntaxError(f"the aliases here expand to more than {MAX_VALUES} values; "
                                  "a pipeline is far smaller (an alias bomb?)", node.start_mark.line + 1)
