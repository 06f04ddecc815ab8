"""Loading a pretrained source's parameters for an `init: pretrained` run (paper section 4.2).

Parameters only, through Orbax's partial restore of the `params` subtree of the source's saved
state: the optimizer state, the masks and the step counter start fresh, so the pruning schedule's
clock starts at the restart and the first masks are computed from the loaded weights. The source
checkpoint is read, never written: its manifest is verified and its shapes are checked against
this run's model before anything is loaded, so a wrong source fails with one clear message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from engine.errors import UserError
from engine.planning.plan import PretrainedSource, RunPlan
from engine.training.checkpoint import STATE_ITEM, restore_params_into, saved_params_metadata, verify_manifest


def _step_dir(source: PretrainedSource) -> Path:
    """The source's step directory, after checking the run finished and the step exists whole."""
    if source.status is not None and source.status.state != "done":
        retry = " --retry-failed" if source.status.state == "failed" else ""
        raise UserError(f"{source.label} is not finished ({source.status.describe()}): "
                        f"train it first (`engine run {source.spec_path}{retry}`)")
    if not source.checkpoints.is_dir():
        raise UserError(f"{source.label}: no checkpoint directory {source.checkpoints}")
    step_dir = source.checkpoints.absolute() / str(source.step)  # Orbax reads absolute paths only
    if not (step_dir / STATE_ITEM).is_dir():
        saved = sorted(int(p.name) for p in source.checkpoints.iterdir() if p.name.isdigit())
        raise UserError(f"{source.label}: no checkpoint at step {source.step} in {source.checkpoints} "
                        f"(saved steps: {', '.join(map(str, saved)) or 'none'})")
    problem = verify_manifest(step_dir)
    if problem is not None:
        raise UserError(f"{source.label}: checkpoint step {source.step} is damaged ({problem})")
    return step_dir


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape) for path, leaf in flat}


def check_shapes(saved: Any, wanted: Any, label: str) -> None:
    """Every parameter of this model exists in the source with the same shape, and no other."""
    have, need = _flat_shapes(saved), _flat_shapes(wanted)
    for name in sorted(have.keys() | need.keys()):
        if name not in have:
            raise UserError(f"{label}: the checkpoint has no parameter {name} that this model needs")
        if name not in need:
            raise UserError(f"{label}: the checkpoint's parameter {name} does not exist in this model "
                            "(another model family or depth?)")
        if have[name] != need[name]:
            raise UserError(f"{label}: parameter {name} has shape {have[name]} in the checkpoint but "
                            f"{need[name]} in this model (another width?)")


def saved_param_shapes(source: PretrainedSource) -> Any:
    """The source's parameter tree as Orbax metadata (shapes and dtypes; no array is read)."""
    saved = saved_params_metadata(_step_dir(source))
    if saved is None:
        raise UserError(f"{source.label}: step {source.step} is not a checkpoint of this engine (no params)")
    return saved


def check_source(source: PretrainedSource, params_shape: Any) -> None:
    """Everything about the source that can fail, checked without loading any array."""
    check_shapes(saved_param_shapes(source), params_shape, source.label)


def load_params(source: PretrainedSource, params_shape: Any) -> Any:
    """The source's parameters restored into `params_shape`'s structure (ShapeDtypeStructs, with
    shardings when given): an Orbax partial restore of `state.params` only."""
    check_source(source, params_shape)
    return restore_params_into(_step_dir(source), params_shape)


def check_run_sources(runs: list[RunPlan], params_shape_of: Any) -> None:
    """Pre-flight for `engine run`: the source of every run that will load one is finished,
    present, whole and of this run's shapes, before anything is written. `params_shape_of(run)`
    gives a run's parameter ShapeDtypeStructs."""
    for run in runs:
        if run.loads_source() and run.source is not None:  # loads_source() implies a source
            try:
                check_source(run.source, params_shape_of(run))
            except UserError as error:
                raise UserError(f"run {run.run_id} ({run.experiment}): {error}") from None
