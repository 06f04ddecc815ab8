"""Pydantic errors turned into `file:line:col: field: message`, pointing at the YAML node.

Pydantic's `loc` tuples walk the models, and insert the chosen `kind` of a discriminated union
(e.g. ('model', 'vit', 'base', 'layers')); walking the same tuple over the data, skipping those
tags, gives the data path, and the located tree gives its origin.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from spec.common import CROSS_FIELD
from spec.issues import Issue, Origin
from spec.paths import kinds, level_at, suggest
from spec.yaml_tree import Located, find, to_plain

# Errors that only say something is absent: a partial spec (an `extends` base) may lack anything.
INCOMPLETENESS = ("missing", "union_tag_not_found", CROSS_FIELD)

# YAML 1.1 booleans that YAML 1.2 (correctly) reads as text.
_YAML11_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}


def issues_from_validation(
    error: ValidationError,
    tree: Located,
    root: type[BaseModel],
    prefix: tuple[str, ...] = (),
    partial: bool = False,
) -> list[Issue]:
    """One Issue per pydantic error of validating `root` against the data at `prefix` of `tree`."""
    data = to_plain(tree)
    scoped = data
    for part in prefix:
        scoped = scoped[part]
    details = [detail for detail in error.errors() if not (partial and detail["type"] in INCOMPLETENESS)]
    return [_issue(detail, tree, root, prefix, scoped) for detail in details if not _explained(detail, details)]


def _explained(detail: Any, details: list[Any]) -> bool:
    """A missing key next to an unknown key that is its typo says the same thing twice: keep the
    unknown key's error, which carries the suggestion."""
    if detail["type"] != "missing":
        return False
    parent, name = detail["loc"][:-1], str(detail["loc"][-1])
    typos = [str(d["loc"][-1]) for d in details if d["type"] == "extra_forbidden" and d["loc"][:-1] == parent]
    return bool(typos) and bool(difflib.get_close_matches(name, typos, n=1, cutoff=0.6))


def _data_path(loc: Sequence[str | int], data: Any) -> tuple[list[str | int], str | int | None]:
    """The data path of a pydantic loc, and the name of a key the data lacks (if the loc ends in one)."""
    path: list[str | int] = []
    for index, part in enumerate(loc):
        if isinstance(data, dict) and part in data:
            path.append(part)
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            path.append(part)
            data = data[part]
        elif isinstance(data, dict) and part == data.get("kind"):
            continue  # the tag pydantic inserts for a discriminated union
        elif index == len(loc) - 1 and isinstance(data, dict) and isinstance(part, str):
            return path, part
    return path, None


def _issue(detail: Any, tree: Located, root: type[BaseModel], prefix: tuple[str, ...], scoped: Any) -> Issue:
    kind, ctx, value = detail["type"], detail.get("ctx") or {}, detail.get("input")
    path, absent = _data_path(detail["loc"], scoped)
    if kind == CROSS_FIELD and ctx.get("at"):
        path, _ = _data_path(path + ctx["at"].split("."), scoped)
    if kind == "union_tag_invalid":
        path.append("kind")

    full_path = list(prefix) + path  # every part exists: it was read off the data
    node, key_origin, _ = find(tree, tuple(full_path))
    dotted = ".".join(str(part) for part in full_path)
    label = f"{dotted}: " if dotted else ""

    if kind == "missing":  # a missing section belongs to the spec as a whole: its first line
        where = node.origin if full_path else Origin(node.origin.file, 1, 1)
        return Issue(where, f"{label}missing required key `{absent}`")
    if kind == "extra_forbidden":
        key = str(path[-1])
        parent_label = ".".join(str(part) for part in full_path[:-1])
        level = level_at(root, path[:-1], scoped)
        names = level.field_names if level else []
        hint = suggest(key, names) or (f"; expected one of: {', '.join(names)}" if names else "")
        return Issue(key_origin, f"{parent_label + ': ' if parent_label else ''}unknown key `{key}`{hint}")
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        expected = [name.strip(" '") for name in str(ctx.get("expected_tags", "")).split(",")]
        return Issue(
            node.origin, f"{label}must be one of {', '.join(expected)}, got {tag!r}{suggest(tag, expected)}"
        )
    if kind == "union_tag_not_found":
        level = level_at(root, path, scoped)
        options = ", ".join(kinds(level)) if level else ""
        return Issue(node.origin, f"{label}missing required key `kind` (one of: {options})")
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return Issue(node.origin, f"{label}expected a mapping, got {_describe(value)}")
    if kind == "bool_type" and isinstance(value, str) and value.lower() in _YAML11_BOOLEANS:
        return Issue(
            node.origin,
            f"{label}expected true or false, got the text {value!r} (YAML 1.2 reads `{value}` as text, not a boolean)",
        )
    if kind in (CROSS_FIELD, "pattern_string"):
        return Issue(node.origin, f"{label}{detail['msg']}")
    message = detail["msg"].replace("Input should be", "expected").replace("String should", "expected to")
    return Issue(node.origin, f"{label}{message}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the text {value!r}"
    return repr(value)
