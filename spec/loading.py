"""From a spec file to validated concrete runs: read (with `extends`), override, expand, validate.

    experiment = load_experiment(Path("experiments/vit_sweep.yaml"), overrides=["data.steps=10"])
    for point in experiment.points:
        point.coordinates, point.spec      # {"model.nonzeros": 5000, ...}, an ExperimentSpec

Every problem becomes an Issue (origin + message); a file's problems are raised together as one
SpecError. Files under a directory named `bases/` are partial specs meant to be extended: they are
checked for syntax, unknown keys and wrong types, but may leave out anything (see `check_file`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spec.experiment import ExperimentSpec
from spec.issues import Issue, Origin, SpecError
from spec.locate import issues_from_validation
from spec.paths import check_field_path, level_at, split_dotted
from spec.sweep import SWEEPABLE_ROOTS, SweepSpec
from spec.yaml_tree import Located, PathBlocked, deep_merge, find, parse_yaml, relocate, set_at, to_plain

BASES_DIR = "bases"


@dataclass(frozen=True)
class SweepPoint:
    """One concrete run of an experiment: its sweep coordinates (dotted path -> value as written
    in the sweep; empty without a sweep) and its validated spec (with no sweep left in it)."""

    coordinates: dict[str, Any]
    spec: ExperimentSpec


@dataclass(frozen=True)
class Experiment:
    """A validated experiment spec file and its sweep points, in expansion order."""

    path: Path
    sweep: SweepSpec
    points: tuple[SweepPoint, ...]

    @property
    def name(self) -> str:
        return self.points[0].spec.name  # name, analysis and run policy cannot be swept

    @property
    def spec_dir(self) -> Path:
        """Relative paths inside the spec (data files, other specs) are resolved against this."""
        return self.path.parent


def is_base(path: Path) -> bool:
    return BASES_DIR in path.parts[:-1]


def load_experiment(path: Path, overrides: Sequence[str] = ()) -> Experiment:
    """The validated experiment of a spec file. Raises SpecError with every problem found."""
    tree = _load_with_overrides(path, overrides)
    sweep_tree = _entry_node(tree, "sweep")
    sweep = _validate_sweep(tree, sweep_tree)
    all_indices = sweep.point_indices()
    points: list[SweepPoint] = []
    failing: dict[Issue, list[dict[str, int]]] = {}  # each problem and the points that have it
    for indices in all_indices:
        point_tree = _apply_point(tree, sweep_tree, indices)
        try:
            spec = ExperimentSpec.model_validate(to_plain(point_tree))
        except ValidationError as error:
            for issue in issues_from_validation(error, point_tree, ExperimentSpec):
                failing.setdefault(issue, []).append(indices)
            continue
        points.append(SweepPoint(sweep.coordinates(indices), spec))
    # A problem of every point is the spec's; one of some points names the first of them.
    issues = [
        issue if len(where) == len(all_indices) else _at_point(issue, sweep.coordinates(where[0]))
        for issue, where in failing.items()
    ]
    issues = _sections_only_swept(tree, sweep, issues)
    issues += _selector_issues(tree)
    if issues:
        raise SpecError(issues)
    return Experiment(path, sweep, tuple(points))


def _sections_only_swept(tree: Located, sweep: SweepSpec, issues: list[Issue]) -> list[Issue]:
    """A required top-level section the spec lacks (left out, or misspelt: `modle:`) that sweep
    axes below it (model.nonzeros) create at every point: each point's errors inside it are
    consequences, not what is wrong. Keep one error at the spec's top, unless an unknown key's
    "did you mean" already names the section."""
    axes = [*sweep.grid, *sweep.zip]
    roots = {axis.split(".")[0] for axis in axes if "." in axis} - set(tree.value)
    required = {root for root in roots if root in ExperimentSpec.model_fields
                and ExperimentSpec.model_fields[root].is_required()}
    if not required:
        return issues
    kept = [issue for issue in issues if (issue.path or "").split(".")[0] not in required]
    for root in sorted(required):
        if not any(f"did you mean `{root}`" in issue.message for issue in kept):
            swept = ", ".join(axis for axis in axes if axis.startswith(root + "."))
            kept.insert(0, Issue(Origin(tree.origin.file, 1, 1),
                                 f"missing required key `{root}` (the sweep sets {swept}, not the whole section)"))
    return kept


def check_file(path: Path, overrides: Sequence[str] = ()) -> list[Issue]:
    """Every problem of one spec file (none: valid). A base (under `bases/`) is checked as a
    partial spec."""
    try:
        if is_base(path):
            _check_partial(_load_with_overrides(path, overrides))
        else:
            load_experiment(path, overrides)
    except SpecError as error:
        return error.issues
    return []


def _check_partial(tree: Located) -> None:
    try:
        ExperimentSpec.model_validate(to_plain(tree))
    except ValidationError as error:
        issues = issues_from_validation(error, tree, ExperimentSpec, partial=True)
        if issues:
            raise SpecError(issues) from None
    issues = _sweep_path_issues(tree, _entry_node(tree, "sweep")) + _selector_issues(tree)
    if issues:
        raise SpecError(issues)


# Mappings whose keys are dotted field paths of (another) experiment spec, selecting runs.
_SELECTORS = (("init", "source", "where"), ("analysis", "fit", "holdout", "coordinates"))


def _selector_issues(tree: Located) -> list[Issue]:
    """Unknown field paths in run selectors, at the key, with a suggestion."""
    issues = []
    for path in _SELECTORS:
        node, _, depth = find(tree, path)
        if depth < len(path):
            continue
        mappings = node.value if isinstance(node.value, list) else [node]
        for mapping in mappings:
            for dotted, entry in mapping.value.items() if isinstance(mapping.value, dict) else ():
                problem = check_field_path(ExperimentSpec, dotted, None)
                if problem:
                    issues.append(Issue(entry.key_origin, f"{'.'.join(path)}: {problem}"))
    return issues


# --- reading files and `extends` ---------------------------------------------------------------


def load_tree(path: Path, display: str | None = None, _chain: tuple[Path, ...] = ()) -> Located:
    """The located tree of a spec file with its `extends` chain merged in."""
    display = display or str(path)
    tree = _read_mapping(path, display)
    extends = tree.value.get("extends")
    if extends is None:
        return tree
    target_text = extends.node.value
    if not isinstance(target_text, str) or not target_text or "\x00" in target_text:  # no path holds NUL
        raise SpecError([Issue(extends.node.origin, "extends: expected a path to another spec file")])
    target = path.parent / target_text
    target_display = os.path.normpath(os.path.join(os.path.dirname(display), target_text))
    if target_display.startswith("..") or os.path.isabs(target_text):
        # Outside the tree `engine` runs in: name the file that is really read (as YAML data only).
        target_display = str(target.resolve())
    chain = _chain + (path.resolve(),)
    if target.resolve() in chain:
        cycle = " -> ".join([*(str(p.name) for p in chain), target.name])
        raise SpecError([Issue(extends.node.origin, f"extends: cycle {cycle}")])
    if not target.is_file():
        raise SpecError(
            [Issue(extends.node.origin, f"extends: {target_text} not found (looked for {target_display})")]
        )
    return deep_merge(load_tree(target, target_display, chain), tree, replace_whole=_replaced_whole)


def _replaced_whole(path: tuple[str, ...]) -> bool:
    """What `extends` does not merge: a child's `sweep` is its own, not a blend of axes with its
    base's, and mappings whose keys are the user's (e.g. `where:` selectors) are replaced too."""
    level = level_at(ExperimentSpec, path, None)
    return path == ("sweep",) or (level is not None and level.open)


def _read_mapping(path: Path, display: str) -> Located:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError([Issue(Origin(display), f"cannot read: {error.strerror or error}")]) from None
    if b"\0" in raw:
        raise SpecError([Issue(Origin(display), "binary file, not YAML text")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError([Issue(Origin(display), f"not UTF-8 text (byte {error.start})")]) from None
    tree = parse_yaml(text, display)
    if tree is None:
        raise SpecError([Issue(Origin(display, 1, 1), "empty file: expected a mapping of spec fields")])
    if not isinstance(tree.value, dict):
        raise SpecError([Issue(tree.origin, "expected a mapping of spec fields at the top level")])
    return tree


# --- overrides -----------------------------------------------------------------------------------


def _load_with_overrides(path: Path, overrides: Sequence[str]) -> Located:
    tree = load_tree(path)
    issues: list[Issue] = []
    for text in overrides:
        try:
            tree = apply_override(tree, text)
        except SpecError as error:
            issues += error.issues
    if issues:
        raise SpecError(issues)
    issues = [issue for text in overrides if (issue := _override_axis_issue(tree, text))]
    if issues:
        raise SpecError(issues)
    return tree


def _override_axis_issue(tree: Located, text: str) -> Issue | None:
    """`--set FIELD=VALUE` of a field a sweep axis also sets (the field, a part of it, or a mapping
    holding it): every sweep point would replace the override, so it is an error, not a no-op."""
    dotted = text.partition("=")[0].strip()
    keys = split_dotted(ExperimentSpec, dotted, to_plain(tree))
    if not keys or keys[0] == "sweep":
        return None
    field_path = ".".join(keys)
    sweep = _entry_node(tree, "sweep")
    for axes_name in ("grid", "zip"):
        axes = sweep.value.get(axes_name) if sweep is not None and isinstance(sweep.value, dict) else None
        for axis in axes.node.value if axes is not None and isinstance(axes.node.value, dict) else ():
            inside = axis.startswith(field_path + ".") and _sets(text, axis[len(field_path) + 1:])
            if field_path == axis or inside or field_path.startswith(axis + "."):
                return Issue(Origin("", override=text), (
                    f"{dotted}: the sweep axis sweep.{axes_name}.{axis} also sets this field at every sweep "
                    f"point, which would replace the override; set the axis instead "
                    f"(--set 'sweep.{axes_name}.{axis}=[...]') or remove it"))
    return None


def _sets(text: str, sub_path: str) -> bool:
    """Whether the mapping `--set PATH=VALUE` gives holds `sub_path` (dotted): `model={kind: vit}`
    leaves model.d_model to a sweep axis, `model={d_model: 64}` does not."""
    try:
        parsed = parse_yaml(text.partition("=")[2], f"--set {text}")
    except SpecError:
        return True  # unreadable: apply_override says why
    value = to_plain(parsed) if parsed is not None else None
    for key in sub_path.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def apply_override(tree: Located, text: str) -> Located:
    """`--set dotted.path=value`: the value is read as YAML 1.2 (`4`, `1e-3`, `[1, 2]`,
    `{kind: nm, n: 2, m: 4}`) and replaces what the spec says at that path."""
    origin = Origin("", override=text)
    dotted, equals, value_text = text.partition("=")
    dotted = dotted.strip()
    if not equals or not dotted:
        raise SpecError([Issue(origin, "expected PATH=VALUE, e.g. --set data.steps=100")])
    if dotted == "extends" or dotted.startswith("extends."):
        raise SpecError([Issue(origin, "`extends` is resolved before overrides apply; edit the file instead")])
    try:
        parsed = parse_yaml(value_text, f"--set {text}")
    except SpecError as error:
        raise SpecError([Issue(origin, issue.message) for issue in error.issues]) from None
    value = relocate(parsed, origin) if parsed is not None else Located(None, origin)
    keys = split_dotted(ExperimentSpec, dotted, to_plain(tree))
    try:
        return set_at(tree, keys, value, origin)
    except PathBlocked as blocked:
        raise SpecError([Issue(origin, f"cannot set {dotted}: `{blocked.args[0]}` is not a mapping")]) from None


# --- sweeps --------------------------------------------------------------------------------------


def _entry_node(tree: Located, key: str) -> Located | None:
    entry = tree.value.get(key)
    return entry.node if entry else None


def _validate_sweep(tree: Located, sweep_tree: Located | None) -> SweepSpec:
    if sweep_tree is None:
        return SweepSpec()
    try:
        sweep = SweepSpec.model_validate(to_plain(sweep_tree))
    except ValidationError as error:
        issues = issues_from_validation(error, tree, SweepSpec, prefix=("sweep",))
        raise SpecError(issues + _rest_issues(tree)) from None
    issues = _sweep_path_issues(tree, sweep_tree)
    if issues:
        raise SpecError(issues + _rest_issues(tree))
    return sweep


def _rest_issues(tree: Located) -> list[Issue]:
    """With no usable sweep, still report what is wrong elsewhere (types, unknown keys)."""
    try:
        ExperimentSpec.model_validate({k: v for k, v in to_plain(tree).items() if k != "sweep"})
    except ValidationError as error:
        return issues_from_validation(error, tree, ExperimentSpec, partial=True)
    return []


def _sweep_path_issues(tree: Located, sweep_tree: Located | None) -> list[Issue]:
    if sweep_tree is None or not isinstance(sweep_tree.value, dict):
        return []
    data = to_plain(tree)
    issues = []
    for axes_name in ("grid", "zip"):
        axes = sweep_tree.value.get(axes_name)
        if axes is None or not isinstance(axes.node.value, dict):
            continue
        for dotted, entry in axes.node.value.items():
            root = dotted.split(".")[0]
            if root not in SWEEPABLE_ROOTS:
                allowed = ", ".join(SWEEPABLE_ROOTS)
                issues.append(Issue(entry.key_origin, f"sweep.{axes_name}: `{dotted}` cannot be swept (sweepable: {allowed})"))
                continue
            problem = check_field_path(ExperimentSpec, dotted, data)
            if problem:
                issues.append(Issue(entry.key_origin, f"sweep.{axes_name}: {problem}"))
    return issues


def _apply_point(tree: Located, sweep_tree: Located | None, indices: dict[str, int]) -> Located:
    """The spec tree of one sweep point: without `sweep`, with each axis value set at its path and
    keeping the origin of the value in the sweep (so errors point into the sweep's lists)."""
    point = Located({key: entry for key, entry in tree.value.items() if key != "sweep"}, tree.origin)
    if sweep_tree is None:
        return point
    data = to_plain(point)
    for axes_name in ("grid", "zip"):
        axes = sweep_tree.value.get(axes_name)
        for dotted, entry in axes.node.value.items() if axes else ():
            keys = split_dotted(ExperimentSpec, dotted, data)
            try:
                point = set_at(point, keys, entry.node.value[indices[dotted]], entry.key_origin)
            except PathBlocked as blocked:
                message = f"sweep.{axes_name}: cannot set `{dotted}`: `{blocked.args[0]}` is not a mapping"
                raise SpecError([Issue(entry.key_origin, message)]) from None
    return point


def _at_point(issue: Issue, coordinates: dict[str, Any]) -> Issue:
    where = ", ".join(f"{path}={_compact(value)}" for path, value in coordinates.items())
    return Issue(issue.origin, f"{issue.message} (sweep point {where})")


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    return str(value)
