"""`engine validate --plan`: what only expanding a valid spec's sweep into runs reveals.

Each sweep point is planned (engine.planning.plan, pure Python: no JAX, no tracing) and checked for
- a `model.nonzeros` target no width reaches within a factor REACH_FACTOR at the point's
  sparsity (the narrowest model is already too big, or widths in steps of `width_multiple` are
  too coarse),
- an n:m pattern whose group size m does not divide the fan_in (axis 0) of every sparsified
  kernel (engine.planning.sizing.param_shapes, the layout the models use),
- two sweep points that are the same run (same run id, e.g. two sizes that resolve to one width),
- an `init: pretrained` source that cannot be resolved (engine.planning.plan.resolve_source: the source
  spec is missing or invalid, or `where` selects no run or several),
- a token model whose vocab_size cannot hold the tokenizer's ids (the bytes tokenizer's 259, a
  SentencePiece model's pieces when its file exists) plus T5's sentinels,
- a `holdout: {kind: runs}` entry that selects no run, or a holdout that selects every run,
- a sweep with too few from-scratch runs left after the holdout for the fit's free coefficients
  (7, or 3 for an n:m refit, per group size m), so the fit would fail after all the training.
`engine run` refuses the same problems before it trains anything (check_plan).
- a warmup_constant_cooldown learning rate whose warmup and cooldown together exceed a run's steps,
  at `optimizer.learning_rate.warmup_steps`,
- a run that needs more examples than its data files hold while `data.on_exhausted` is refuse
  (engine.planning.data_budget: exact from the prepared cache, else estimated from file sizes),
  at the node that sets the run's `data.steps`.
Each problem is located at the YAML node that sets the field for that point: the value in the
sweep's list when the field is swept, the field itself otherwise (in an `extends` base if that is
where it is written).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.fit.law import COEFFICIENT_NAMES
from engine.planning import sizing
from engine.planning.data_budget import data_budget
from engine.planning.plan import (
    RunPlan,
    SourcePlans,
    base_fields,
    learning_rate_problem,
    level_of,
    model_dims,
    plan_run,
    schedule_problem,
)
from engine.planning.sizing import ModelDims
from spec.analysis import LargestNonzerosHoldout, RunsHoldout
from spec.data import SentencepieceTokenizer, TextFiles
from spec.experiment import ExperimentSpec
from spec.init import PretrainedInit, RunSource
from spec.issues import Issue, Origin, SpecError
from spec.loading import apply_override, load_experiment, load_tree
from spec.model import MAX_D_MODEL
from spec.sparsity import NmPattern
from spec.yaml_tree import Located, find

# The planned non-zero count may miss a `model.nonzeros` target by at most this factor either way.
REACH_FACTOR = 1.5


def plan_issues(path: Path, overrides: Sequence[str], analysis: bool = True) -> list[Issue]:
    """Every planning problem of a spec file that validates (check it with spec.loading.check_file
    first: an invalid spec raises SpecError here). `analysis=False` leaves out the checks of the
    holdout and the fit (for `engine run --no-report`, which fits nothing)."""
    experiment = load_experiment(path, overrides)
    sources = SourcePlans(Path("."))  # pretrained source specs, each planned once
    tree = load_tree(path)
    for text in overrides:
        tree = apply_override(tree, text)
    all_indices = experiment.sweep.point_indices()
    issues: list[Issue] = []
    planned: list[tuple[RunPlan, dict[str, int]]] = []
    for indices, point in zip(all_indices, experiment.points, strict=True):
        locate = _Locator(tree, indices)
        spec = point.spec
        dims = model_dims(spec.model, spec.sparsity)
        reach = reach_problem(spec, dims)
        if reach:
            issues.append(Issue(locate("model.nonzeros"), reach))
        nm = nm_problem(spec, dims)
        if nm:
            issues.append(Issue(locate("sparsity.pattern.m"), nm))
        source_issue = _source_spec_issue(spec, experiment.spec_dir, sources, locate)
        if source_issue:
            issues.append(source_issue)
            sources = SourcePlans(Path("."))  # a failed source planning may leave it mid-way
            continue
        try:
            run = plan_run(spec, point.coordinates, experiment.spec_dir, sources=sources)
        except UserError as error:
            issues.append(_planning_issue(error, spec, locate))
            continue
        planned.append((run, indices))
        schedule = schedule_problem(run.spec.sparsity, run.steps)
        if schedule:
            issues.append(Issue(locate("sparsity.schedule.interval"), schedule, at="sparsity.schedule.interval"))
        rate = learning_rate_problem(run.spec.optimizer.learning_rate, run.steps)
        if rate:
            at = "optimizer.learning_rate.warmup_steps"
            issues.append(Issue(locate(at), rate, at=at))
        vocab = vocab_problem(run)
        if vocab:
            issues.append(Issue(locate("data.source.tokenizer"), vocab, at="data.source.tokenizer"))
        exhausted = exhaustion_problem(run)
        if exhausted:
            issues.append(Issue(locate("data.steps"), exhausted, at="data.steps"))
    issues += duplicate_issues(planned, tree)
    runs = [run for run, _ in planned]
    if analysis and runs and len(runs) == len(experiment.points):  # these need the whole sweep
        holdout = holdout_issues(runs, tree)
        issues += holdout or fit_size_issues(runs, tree)  # a holdout of every run leaves none: said once
    return list(dict.fromkeys(issues))  # a problem shared by several points is reported once


def check_plan(path: Path, overrides: Sequence[str], analysis: bool = True) -> None:
    """What `engine run` calls before training: raise SpecError with every problem plan_issues finds,
    so a sweep that cannot succeed (or cannot be fitted) is refused before it costs any compute."""
    issues = plan_issues(path, overrides, analysis)
    if issues:
        raise SpecError(issues)


# --- checks (pure: a concrete run spec and its resolved shape in, a message or None out) ----------


def vocab_problem(run: RunPlan) -> str | None:
    """Why the tokenizer's ids (plus T5's sentinels) do not fit the model's vocab_size, or None.
    A model file that is not there yet is not checked (plain planning needs no data)."""
    from engine.data.layouts import token_layout

    source = run.spec.data.source
    if not isinstance(source, TextFiles) or run.dims.family not in ("t5", "decoder"):
        return None
    tokenizer = source.tokenizer
    if isinstance(tokenizer, SentencepieceTokenizer) and tokenizer.train is not None:
        needed, what = tokenizer.train.vocab_size, f"the trained SentencePiece model of {tokenizer.train.vocab_size} pieces"
    else:
        from engine.data.build import tokenizer_setting
        from engine.data.tokenizers import tokenizer_ref

        ref = tokenizer_ref(tokenizer_setting(tokenizer.model_dump(exclude_none=True)), run.spec_dir)  # type: ignore[arg-type]
        if ref.path is not None and not ref.path.is_file():
            return None
        try:
            needed, what = _id_count(ref.kind, ref.path), f"tokenizer {ref.path or ref.kind}"
        except UserError as error:
            return f"data.source.tokenizer: {error}"
    layout = token_layout(run.dims)
    if needed <= layout.content_limit:
        return None
    sentinels = f" plus {layout.sentinels} T5 sentinels" if layout.sentinels else ""
    return (f"data.source.tokenizer: {what} needs {needed} token ids{sentinels}, but the model's vocab_size is "
            f"{run.dims.vocab_size}; raise model vocab_size to at least {needed + layout.sentinels}")


@lru_cache(maxsize=16)
def _id_count(kind: str, path: Path | None) -> int:
    """The tokenizer's id count, loaded once per model file (a sweep's runs share one)."""
    from engine.data.tokenizers import TokenizerRef

    return TokenizerRef(kind, path).load().id_count  # type: ignore[arg-type]


def exhaustion_problem(run: RunPlan) -> str | None:
    """Why the run would run out of data it may not repeat, or None."""
    if run.spec.data.on_exhausted != "refuse":
        return None
    budget = data_budget(run)
    if budget is None or budget.needed <= budget.available:
        return None
    return f"data.steps: {budget.describe()}; lower data.steps or add data (or set data.on_exhausted: warn)"


def reach_problem(spec: ExperimentSpec, dims: ModelDims) -> str | None:
    """Why the chosen width misses the `model.nonzeros` target by more than REACH_FACTOR, or None."""
    target = spec.model.nonzeros
    if target is None:
        return None
    level = level_of(spec.sparsity)
    achieved = sizing.nonzeros_at(dims, level)
    if achieved and max(achieved / target, target / achieved) <= REACH_FACTOR:
        return None
    multiple = spec.model.width_multiple
    head = f"model.nonzeros: {target:g} non-zeros cannot be reached at sparsity {level:g}"
    if dims.d_model == multiple and achieved > target:
        return (
            f"{head}: the narrowest model (d_model {multiple}, the width_multiple) already has {achieved} "
            f"({achieved / target:.3g}x the target); raise the target or lower width_multiple"
        )
    if achieved < target and dims.d_model + multiple > MAX_D_MODEL:
        return (
            f"{head}: even the widest model (d_model {dims.d_model}, the largest multiple of {multiple} up to "
            f"{MAX_D_MODEL}) has only {achieved} ({achieved / target:.3g}x the target); lower the target"
        )
    other_width = dims.d_model - multiple if achieved > target else dims.d_model + multiple
    mlp_ratio = base_fields(spec.model)["mlp_ratio"]
    other = sizing.nonzeros_at(sizing.scaled_dims(dims, other_width, mlp_ratio), level)
    return (
        f"{head} within a factor {REACH_FACTOR:g}: in steps of width_multiple {multiple}, d_model "
        f"{dims.d_model} has {achieved} and d_model {other_width} has {other}; lower width_multiple"
    )


# --- the analysis: holdout and enough runs to fit ------------------------------------------------

NM_FREE_COEFFICIENTS = 3  # a_S, b_S, c_S: engine.fit.result.FitSettings.free_coefficients with frozen dense


def held_out_run_ids(holdout: object, runs: list[RunPlan]) -> set[str]:
    """The from-scratch runs a spec's `analysis.fit.holdout` leaves out of the fit (pretrained
    runs are never fitted). largest_nonzeros: the runs at the largest size target."""
    scratch = [run for run in runs if run.init != "pretrained"]
    if isinstance(holdout, RunsHoldout):
        return {run.run_id for run in scratch
                if any(matches_coordinates(run.coordinates, entry) for entry in holdout.coordinates)}
    if isinstance(holdout, LargestNonzerosHoldout) and scratch:
        target = {run.run_id: run.coordinates.get("model.nonzeros", run.nonzeros) for run in scratch}
        largest = max(target.values())
        held = {run_id for run_id, value in target.items() if value == largest}
        return held if len(held) < len(scratch) else set()  # one size: the analysis holds out none
    return set()


def matches_coordinates(coordinates: dict[str, Any], entry: dict[str, Any]) -> bool:
    """A run's sweep coordinates agree with every dotted path -> value of one holdout entry."""
    return all(path in coordinates and coordinates[path] == value for path, value in entry.items())


def holdout_issues(runs: list[RunPlan], tree: Located) -> list[Issue]:
    """A `holdout: {kind: runs}` entry that selects no run (at the entry), or entries that together
    select every from-scratch run (at `holdout`): the held-out check could not run."""
    fit = runs[0].spec.analysis.fit
    if fit is None or not isinstance(fit.holdout, RunsHoldout) or runs[0].spec.analysis.nm_refit is not None:
        return []
    path = ("analysis", "fit", "holdout")
    issues = []
    scratch = [run for run in runs if run.init != "pretrained"]
    axes = sorted({axis for run in scratch for axis in run.coordinates})
    for index, entry in enumerate(fit.holdout.coordinates):
        if not any(matches_coordinates(run.coordinates, entry) for run in scratch):
            node = find(tree, (*path, "coordinates", index))[0]
            unknown = [key for key in entry if key not in axes]
            why = (f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a sweep axis (axes: "
                   f"{', '.join(axes) or 'none'})" if unknown else "no sweep point has all these values")
            issues.append(Issue(node.origin, f"analysis.fit.holdout.coordinates[{index}]: selects no run: {why}",
                                at="analysis.fit.holdout.coordinates"))
    held = held_out_run_ids(fit.holdout, runs)
    if scratch and len(held) == len(scratch):
        issues.append(Issue(find(tree, path)[1], f"analysis.fit.holdout: selects every one of the {len(scratch)} "
                            "from-scratch runs; none would be left to fit"))
    return issues


def fit_size_issues(runs: list[RunPlan], tree: Located) -> list[Issue]:
    """Too few from-scratch runs to fit what the analysis declares, at `sweep` (or `analysis.fit`
    without a sweep): the fit would fail only after every run has trained."""
    analysis = runs[0].spec.analysis
    if analysis.fit is None and analysis.nm_refit is None:
        return []
    problem = fit_size_problem(runs)
    if problem is None:
        return []
    _, key_origin, depth = find(tree, ("sweep",))
    if depth == 1:
        return [Issue(key_origin, f"sweep: {problem}", at="sweep")]
    _, key_origin, depth = find(tree, ("analysis", "fit"))  # one run: at the fit, or the spec's top
    return [Issue(key_origin if depth == 2 else Origin(tree.origin.file, 1, 1), problem, at="analysis.fit")]


def fit_size_problem(runs: list[RunPlan]) -> str | None:
    """Why the declared fit cannot be made from these runs, or None: the law's 7 free coefficients
    need 8 fitted (from-scratch, not held-out) runs; an n:m refit's 3 need 4 per group size m."""
    analysis = runs[0].spec.analysis
    scratch = [run for run in runs if run.init != "pretrained"]
    if analysis.nm_refit is not None:
        groups: dict[int, int] = {}
        for run in scratch:
            if isinstance(run.spec.sparsity.pattern, NmPattern):
                groups[run.spec.sparsity.pattern.m] = groups.get(run.spec.sparsity.pattern.m, 0) + 1
        short = {m: count for m, count in groups.items() if count <= NM_FREE_COEFFICIENTS}
        if not short:
            return None
        listed = ", ".join(f"{_runs(count)} of n:{m}" for m, count in sorted(short.items()))
        return (f"too few runs for analysis.nm_refit: it fits {NM_FREE_COEFFICIENTS} free coefficients (a_S, b_S, c_S) per group "
                f"size m and needs at least {NM_FREE_COEFFICIENTS + 1} runs of each; the spec has {listed}")
    free = len(COEFFICIENT_NAMES)
    if analysis.fit is None:
        return None  # nothing is fitted
    held = held_out_run_ids(analysis.fit.holdout, runs)
    fitted = len(scratch) - len(held)
    if fitted > free:
        return None
    held_text = f", {len(held)} of them held out by analysis.fit.holdout" if held else ""
    return (f"too few runs for analysis.fit: the law's {free} free coefficients need at least {free + 1} fitted runs; "
            f"the spec has {_runs(len(scratch))} from scratch{held_text}, leaving {fitted}. Add sweep points, "
            "change the holdout, or set analysis.fit: null")


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


def _kernel_kind(name: str) -> str:
    """`encoder/block_3/mlp/fc1/kernel` -> `encoder/block_*/mlp/fc1/kernel`: one entry per layer kind."""
    return re.sub(r"block_\d+", "block_*", name)


def nm_problem(spec: ExperimentSpec, dims: ModelDims) -> str | None:
    """Which sparsified kernels an n:m pattern's groups of m cannot tile along fan_in, or None."""
    pattern = spec.sparsity.pattern
    if not isinstance(pattern, NmPattern):
        return None
    kinds_by_fan_in: dict[int, list[str]] = {}
    for name, shape in sizing.sparsified_shapes(dims).items():
        kinds = kinds_by_fan_in.setdefault(shape[0], [])
        if shape[0] % pattern.m and _kernel_kind(name) not in kinds:
            kinds.append(_kernel_kind(name))
    listed = [
        f"fan_in {fan_in} of {kinds[0]}" + (f" and {len(kinds) - 1} more kernel kinds" if len(kinds) > 1 else "")
        for fan_in, kinds in kinds_by_fan_in.items() if kinds
    ]
    if not listed:
        return None
    return (
        f"sparsity.pattern.m: n:m groups of m={pattern.m} run along each sparsified kernel's fan_in, "
        f"which m must divide; at d_model {dims.d_model} it does not divide {'; '.join(listed)}"
    )


def duplicate_issues(planned: list[tuple[RunPlan, dict[str, int]]], tree: Located) -> list[Issue]:
    """Sweep points that describe one run, at the first sweep value where the later point differs."""
    issues = []
    first_of: dict[str, tuple[RunPlan, dict[str, int]]] = {}
    for plan, indices in planned:
        if plan.run_id not in first_of:
            first_of[plan.run_id] = (plan, indices)
            continue
        first, first_indices = first_of[plan.run_id]
        axis = next(axis for axis in indices if indices[axis] != first_indices[axis])
        axes_name = _axes_of(tree, axis)
        issues.append(Issue(
            _Locator(tree, indices)(axis),
            f"sweep.{axes_name}: point {_point(plan.coordinates)} is the same run as point "
            f"{_point(first.coordinates)} (run id {plan.run_id}, d_model {plan.d_model}); the sweep would train it twice",
        ))
    return issues


def _source_spec_issue(spec: ExperimentSpec, spec_dir: Path, sources: SourcePlans, locate: _Locator) -> Issue | None:
    """A pretrained init's source spec that is missing, invalid or cannot be planned itself (its own
    problem, not this spec's `where`), at `init.source.spec`."""
    init = spec.init
    if not isinstance(init, PretrainedInit) or not isinstance(init.source, RunSource):
        return None
    path = spec_dir / init.source.spec
    try:
        sources.plans(path)
    except SpecError as error:
        first, count = error.issues[0], len(error.issues)
        message = f"{init.source.spec} is not a valid spec ({count} problem{'s' if count > 1 else ''}, first: {first})"
    except UserError as error:
        if not path.is_file():
            return Issue(locate("init.source.spec"), str(error), at="init.source.spec")
        message = f"{init.source.spec} cannot be planned: {error}"
    else:
        return None
    return Issue(locate("init.source.spec"), f"init.source.spec: {message}")


def _planning_issue(error: UserError, spec: ExperimentSpec, locate: _Locator) -> Issue:
    """A planning error: for a pretrained init, at the part of `init.source` the message names."""
    if not isinstance(spec.init, PretrainedInit):
        return Issue(locate(""), str(error))
    named = re.match(r"init\.source(?:\.(?:spec|where|path|step))?", str(error))
    at = named.group(0) if named else "init.source"
    return Issue(locate(at), str(error), at=at)


# --- locating a field of one sweep point in the YAML -------------------------------------------


class _Locator:
    """The origin of the node that sets a dotted field for one sweep point."""

    def __init__(self, tree: Located, indices: dict[str, int]) -> None:
        self.tree = tree
        self.indices = indices

    def __call__(self, dotted: str) -> Origin:
        if not dotted:
            return Origin(self.tree.origin.file)
        for axis, values in _axes(self.tree).items():
            if axis in self.indices and (dotted == axis or dotted.startswith(axis + ".")):
                rest = dotted[len(axis) + 1 :]
                return find(values.value[self.indices[axis]], tuple(rest.split(".")) if rest else ())[0].origin
        return find(self.tree, tuple(dotted.split(".")))[0].origin


def _axes(tree: Located) -> dict[str, Located]:
    """Sweep axis path -> its list node, grid axes then zip axes."""
    axes: dict[str, Located] = {}
    sweep = tree.value.get("sweep")
    for axes_name in ("grid", "zip"):
        node, _, depth = find(sweep.node, (axes_name,)) if sweep else (None, None, 0)
        if node is not None and depth == 1 and isinstance(node.value, dict):
            axes |= {axis: entry.node for axis, entry in node.value.items()}
    return axes


def _axes_of(tree: Located, axis: str) -> str:
    sweep = tree.value["sweep"].node
    grid, _, depth = find(sweep, ("grid",))
    return "grid" if depth == 1 and axis in grid.value else "zip"


def _point(coordinates: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{path}={_compact(value)}" for path, value in coordinates.items()) + "}"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_compact(item)}" for key, item in value.items()) + "}"
    return f"{value:g}" if isinstance(value, float) else str(value)
