"""YAML 1.2 read into a tree that remembers where every key and value came from.

ruamel.yaml composes the node graph (YAML 1.2: `1e-3` is a float, `2:4` and `no` are strings) and
this module builds plain values from it, so that (a) only the core schema's types exist (null,
bool, int, float, str; anything tagged otherwise is an error, nothing is ever instantiated),
(b) duplicate keys are errors naming both positions, and (c) every node keeps its origin for
error messages, also after `extends` merges, overrides and sweep points move nodes around.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import MappingEndEvent, MappingStartEvent, SequenceEndEvent, SequenceStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from spec.issues import Issue, Origin, SpecError

Scalar = str | int | float | bool | None
_CORE = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Located:
    """A value with its origin. `value` is a Scalar, a dict key -> Entry, or a list of Located."""

    value: Any
    origin: Origin


@dataclass(frozen=True)
class Entry:
    """A mapping entry: the key's own origin (for unknown-key errors) and the value."""

    key_origin: Origin
    node: Located


@dataclass
class _Builder:
    filename: str
    issues: list[Issue] = field(default_factory=list)
    _active: set[int] = field(default_factory=set)  # nodes being built, to catch recursive aliases

    def origin(self, node: Node) -> Origin:
        return Origin(self.filename, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Node) -> Located:
        if id(node) in self._active:
            self.issues.append(Issue(self.origin(node), "recursive YAML alias"))
            return Located(None, self.origin(node))
        self._active.add(id(node))
        try:
            expected = _CORE + ("map" if isinstance(node, MappingNode) else "seq")
            if isinstance(node, (MappingNode, SequenceNode)) and node.tag != expected:
                # e.g. !!python/object:os.system {...}: refused, never constructed
                self.issues.append(Issue(self.origin(node), _tag_refusal(node.tag)))
                return Located(None, self.origin(node))
            if isinstance(node, MappingNode):
                return self._mapping(node)
            if isinstance(node, SequenceNode):
                return Located([self.build(item) for item in node.value], self.origin(node))
            assert isinstance(node, ScalarNode), node  # a composed node is a mapping, a sequence or a scalar
            return Located(self._scalar(node), self.origin(node))
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode) -> Located:
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            key_origin = self.origin(key_node)
            if key_node.tag == _CORE + "merge":
                self.issues.append(Issue(key_origin, "YAML merge keys (<<) are not supported; use `extends:`"))
                continue
            key = self._scalar(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.issues.append(Issue(key_origin, f"keys must be strings, got {key_node.value!r}"))
                continue
            if key in entries:
                first = entries[key].key_origin
                self.issues.append(
                    Issue(key_origin, f"duplicate key `{key}` (first defined at line {first.line}, column {first.col})")
                )
                continue
            entries[key] = Entry(key_origin, self.build(value_node))
        return Located(entries, self.origin(node))

    def _scalar(self, node: ScalarNode) -> Scalar:
        text, tag = node.value, node.tag
        if tag is None:  # the composer resolves every node's tag; refused like an unknown tag all the same
            self.issues.append(Issue(self.origin(node), _tag_refusal(tag)))
            return None
        try:
            if tag == _CORE + "str" or tag == _CORE + "timestamp":  # dates stay text
                return text
            if tag == _CORE + "null":
                return None
            if tag == _CORE + "bool":
                return text.lower() == "true"
            if tag == _CORE + "int":
                return _parse_int(text)
            if tag == _CORE + "float":
                return _parse_float(text)
        except ValueError:
            self.issues.append(Issue(self.origin(node), f"cannot read {text!r} as {tag.removeprefix(_CORE)}"))
            return None
        self.issues.append(Issue(self.origin(node), _tag_refusal(tag)))
        return None


def _tag_refusal(tag: str | None) -> str:
    if tag is None:
        shown = "(none)"
    else:
        shown = "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
    return f"unsupported YAML tag {shown}; only plain values are allowed (nothing is constructed from tags)"


def _parse_int(text: str) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
        if digits.lower().startswith(prefix):
            return sign * int(digits[2:], base)
    return sign * int(digits, 10)


def _parse_float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    if lowered.lstrip("+-") == ".inf":
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(lowered)


MAX_DEPTH = 64  # a spec nests a handful of levels; far deeper input would exhaust recursion
# Nodes of a document with its aliases expanded. The paper's specs have a few hundred; a
# "billion laughs" file (aliases of aliases) would expand to billions, so it is refused first.
MAX_NODES = 100_000


def _check_version(text: str, filename: str) -> None:
    """Refuse a `%YAML` directive of another version than 1.2: under 1.1 ruamel reads `yes` as
    true and `0755` as octal, so the spec would not mean what it says everywhere else (and it
    asserts on versions it does not know). Directives are the lines before the document starts."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith("%"):
            return  # the document has started: no more directives
        words = line.split()
        if words[0] == "%YAML" and words[1:2] != ["1.2"]:
            version = f" {words[1]}" if len(words) > 1 else ""
            raise SpecError([Issue(Origin(filename, number, 1),
                                   f"%YAML{version}: only YAML 1.2 is read (remove the directive or write %YAML 1.2)")])


def _check_depth(text: str, filename: str) -> None:
    """Refuse absurdly deep nesting before composing (ruamel's composer and our builder recurse
    per level; Python's stack would overflow in the low hundreds). The event parser is a loop."""
    depth = 0
    for event in YAML(typ="rt").parse(text):
        if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                where = Origin(filename, mark.line + 1, mark.column + 1)
                raise SpecError([Issue(where, f"nesting deeper than {MAX_DEPTH} levels")])
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            depth -= 1


def _check_expansion(root: Node, filename: str) -> None:
    """Refuse a document whose aliases expand past MAX_NODES nodes or MAX_DEPTH levels. The
    composed graph shares one node per anchor, so each node's expanded size and depth are computed
    once (iteratively: alias chains may be deeper than Python's stack), in time linear in the file."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    visiting: set[int] = set()  # nodes whose children are being counted
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if not expanded:
            if id(node) in visiting:
                continue  # a recursive alias: counted once here, refused by the builder
            visiting.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        visiting.discard(id(node))
        size[id(node)] = 1 + sum(size.get(id(child), 1) for child in children)
        nests = isinstance(node, (MappingNode, SequenceNode))  # depth counts collections, as _check_depth does
        depth[id(node)] = int(nests) + max((depth.get(id(child), 0) for child in children), default=0)
        if size[id(node)] > MAX_NODES or depth[id(node)] > MAX_DEPTH:
            what = (f"expand to more than {MAX_NODES} nodes" if size[id(node)] > MAX_NODES
                    else f"nest deeper than {MAX_DEPTH} levels")
            mark = node.start_mark
            raise SpecError([Issue(Origin(filename, mark.line + 1, mark.column + 1),
                                   f"YAML aliases here {what}; a spec needs far fewer (write the values out)")])


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def parse_yaml(text: str, filename: str) -> Located | None:
    """One YAML document as a located tree; None for an empty document. Raises SpecError."""
    try:
        _check_version(text, filename)
        _check_depth(text, filename)
        root = YAML(typ="rt").compose(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Origin(filename, mark.line + 1, mark.column + 1) if mark else Origin(filename)
        problem = error.problem or error.context or "malformed YAML"
        raise SpecError([Issue(where, f"invalid YAML: {problem}")]) from None
    except YAMLError as error:  # e.g. a control character the reader refuses
        position = getattr(error, "position", None)
        where = _offset_origin(text, position, filename) if position is not None else Origin(filename)
        raise SpecError([Issue(where, f"invalid YAML: {str(error).splitlines()[0]}")]) from None
    if root is None:
        return None
    _check_expansion(root, filename)
    builder = _Builder(filename)
    tree = builder.build(root)
    if builder.issues:
        raise SpecError(builder.issues)
    return tree


def _offset_origin(text: str, offset: int, filename: str) -> Origin:
    before = text[:offset]
    line = before.count("\n") + 1
    return Origin(filename, line, offset - (before.rfind("\n") + 1) + 1)


def to_plain(node: Located) -> Any:
    """The tree's values without origins: what pydantic validates."""
    if isinstance(node.value, dict):
        return {key: to_plain(entry.node) for key, entry in node.value.items()}
    if isinstance(node.value, list):
        return [to_plain(item) for item in node.value]
    return node.value


def relocate(node: Located, origin: Origin) -> Located:
    """The same tree with every node attributed to `origin` (values given by an override)."""
    if isinstance(node.value, dict):
        value: Any = {key: Entry(origin, relocate(entry.node, origin)) for key, entry in node.value.items()}
    elif isinstance(node.value, list):
        value = [relocate(item, origin) for item in node.value]
    else:
        value = node.value
    return Located(value, origin)


def deep_merge(
    base: Located,
    child: Located,
    replace_whole: Callable[[tuple[str, ...]], bool] = lambda path: False,
    _path: tuple[str, ...] = (),
) -> Located:
    """`extends` semantics: mappings merge recursively and the child wins; lists and scalars are
    replaced. A child mapping replaces the base's whole when its `kind` differs (an adamw block
    never inherits adafactor's fields) or when `replace_whole(path)` says so."""
    if not (isinstance(base.value, dict) and isinstance(child.value, dict)):
        return child
    base_kind, child_kind = base.value.get("kind"), child.value.get("kind")
    if base_kind and child_kind and to_plain(base_kind.node) != to_plain(child_kind.node):
        return child
    if _path and replace_whole(_path):
        return child
    merged = dict(base.value)
    for key, entry in child.value.items():
        if key in base.value:
            entry = Entry(entry.key_origin, deep_merge(base.value[key].node, entry.node, replace_whole, _path + (key,)))
        merged[key] = entry
    return Located(merged, child.origin)


class PathBlocked(ValueError):
    """A value that is not a mapping sits on a path being set; args[0] is its dotted path."""


def set_at(root: Located, path: tuple[str, ...], node: Located, key_origin: Origin, _prefix: tuple[str, ...] = ()) -> Located:
    """A copy of the mapping `root` with `node` at `path`; missing mappings on the way are created
    and, like the new key, attributed to `key_origin`."""
    if not path:
        return node
    head, rest = path[0], path[1:]
    entries = dict(root.value)
    existing = entries.get(head)
    if not rest:
        entries[head] = Entry(key_origin, node)
    else:
        child = existing.node if existing else Located({}, key_origin)
        if not isinstance(child.value, dict):
            raise PathBlocked(".".join(_prefix + (head,)))
        updated = set_at(child, rest, node, key_origin, _prefix + (head,))
        entries[head] = Entry(existing.key_origin if existing else key_origin, updated)
    return Located(entries, root.origin)


def find(root: Located, path: tuple[str | int, ...]) -> tuple[Located, Origin, int]:
    """The deepest node along `path` that exists, the origin of the key that leads to it, and how
    many path elements were consumed."""
    node, key_origin = root, root.origin
    for depth, part in enumerate(path):
        if isinstance(node.value, dict) and isinstance(part, str) and part in node.value:
            entry = node.value[part]
            node, key_origin = entry.node, entry.key_origin
        elif isinstance(node.value, list) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            key_origin = node.origin
        else:
            return node, key_origin, depth
    return node, key_origin, len(path)
