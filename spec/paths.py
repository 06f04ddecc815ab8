"""Which dotted field paths exist, read off the pydantic models themselves.

Used for unknown-key suggestions, for checking sweep axes and `where:` selectors, and for
splitting `--set` paths (a path into an open mapping such as `sweep.grid` keeps its dots:
`sweep.grid.model.nonzeros` is the key `model.nonzeros` of `sweep.grid`).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel


@dataclass(frozen=True)
class Level:
    """What a value at some path may be: a mapping with the fields of `models`, an open mapping
    (any key), or a plain value (neither)."""

    models: tuple[type[BaseModel], ...] = ()
    open: bool = False

    @property
    def field_names(self) -> list[str]:
        names: dict[str, None] = {}
        for model in self.models:
            names |= dict.fromkeys(model.model_fields)
        return list(names)

    def annotation(self, name: str) -> Any:
        return next(model.model_fields[name].annotation for model in self.models if name in model.model_fields)


def level_of(annotation: Any, data: Any = None) -> Level:
    """The Level of a field annotation; a discriminated union is narrowed by data's `kind`."""
    origin = get_origin(annotation)
    if annotation is Any:
        return Level(open=True)
    if origin is Annotated:
        return level_of(get_args(annotation)[0], data)
    if origin in (Union, types.UnionType):
        levels = [level_of(member, data) for member in get_args(annotation) if member is not type(None)]
        models = tuple(model for level in levels for model in level.models)
        return Level(_narrow_by_kind(models, data), any(level.open for level in levels))
    if origin is dict:
        return Level(open=True)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Level((annotation,))
    return Level()


def kinds(level: Level) -> list[str]:
    """The `kind` values the models of a level accept, in declaration order."""
    found: list[str] = []
    for model in level.models:
        field = model.model_fields.get("kind")
        if field is not None and get_origin(field.annotation) is Literal:
            found += [str(value) for value in get_args(field.annotation)]
    return found


def _narrow_by_kind(models: tuple[type[BaseModel], ...], data: Any) -> tuple[type[BaseModel], ...]:
    kind = data.get("kind") if isinstance(data, dict) else None
    matching = tuple(model for model in models if kind is not None and kind in kinds(Level((model,))))
    return matching or models


def level_at(root: type[BaseModel], path: Sequence[str | int], data: Any) -> Level | None:
    """The Level at `path` below the root model, or None when the path leaves the models."""
    level = Level((root,))
    for part in path:
        if level.open:
            return Level(open=True)
        if not isinstance(part, str) or part not in level.field_names:
            return None
        annotation = level.annotation(part)
        data = data.get(part) if isinstance(data, dict) else None
        level = level_of(annotation, data)
    return level


def suggest(word: str, options: Sequence[str]) -> str:
    """' (did you mean `x`?)' for the closest option, or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def check_field_path(root: type[BaseModel], dotted: str, data: Any) -> str | None:
    """None when `dotted` names a field (or lies inside an open mapping); otherwise why not."""
    parts = dotted.split(".")
    level = Level((root,))
    for index, part in enumerate(parts):
        if level.open:
            return None
        where = "`" + ".".join(parts[:index]) + "`" if index else "the spec"
        names = level.field_names
        if not names:
            return f"{where} is a plain value with no field `{part}`"
        if part not in names:
            return f"unknown field `{part}` in {where}{suggest(part, names)}"
        data = data.get(part) if isinstance(data, dict) else None
        level = level_of(level.annotation(part), data)
    return None


def split_dotted(root: type[BaseModel], dotted: str, data: Any) -> tuple[str, ...]:
    """A dotted path as mapping keys: split at every dot until the path enters an open mapping,
    whose key is the rest of the path, dots included."""
    parts = dotted.split(".")
    level: Level | None = Level((root,))
    for index, part in enumerate(parts):
        if level is not None and level.open:
            return tuple(parts[:index]) + (".".join(parts[index:]),)
        if level is None or part not in level.field_names:
            level = None
            continue
        data = data.get(part) if isinstance(data, dict) else None
        level = level_of(level.annotation(part), data)
    return tuple(parts)
