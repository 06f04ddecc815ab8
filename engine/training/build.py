"""Planned run -> the objects the training loop runs: schedule, optimizer, data, model functions.

Each spec section is built by one small function; nothing here trains or touches the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import optax

from engine import models
from engine.data import Batch, DataSource, build_source
from engine.data.base import step_batches
from engine.errors import UserError
from engine.planning.plan import (
    RunPlan,
    cooldown_steps,
    gmp_steps,
    learning_rate_problem,
    schedule_problem,
    source_settings,
)
from engine.sparsity import (
    NM,
    DenseSchedule,
    GradualSchedule,
    OneShotSchedule,
    Pattern,
    Schedule,
    Unstructured,
    masked_pruning,
    sparsified_tree,
)
from engine.sparsity.masks import check_pattern
from engine.sparsity.pruning import with_final_keep
from engine.sparsity.report import MATCHED_EMBEDDINGS
from engine.training.loop import RunSetup
from engine.training.optim import (
    LearningRateSchedule,
    adafactor,
    adamw,
    clip_by_global_norm,
    constant_lr,
    cosine_lr,
    rsqrt_lr,
    warmup_constant_cooldown_lr,
)
from engine.training.parallel import build_layout
from engine.training.pretrained import check_source
from engine.training.pretrained import load_params as load_source_params
from engine.training.run_log import RunLogging, WandbTarget, require_wandb
from spec.optimizer import (
    AdafactorOptimizer,
    ConstantRate,
    CosineRate,
    OptimizerSpec,
    RsqrtRate,
    WarmupConstantCooldownRate,
)
from spec.sparsity import GmpSchedule, NmPattern, OneshotSchedule, SparsitySpec


def build_schedule(sparsity: SparsitySpec, steps: int, where: str) -> Schedule:
    """The pruning schedule in steps. GMP's fractions become steps; the mask update that reaches
    the final level (the first interval multiple at or after `end`) must fall inside the run, or
    the run would end short of its sparsity."""
    schedule, level = sparsity.schedule, sparsity.level
    if level is None:  # validation fills it in (an n:m pattern's 1 - n/m) or refuses the spec
        raise ValueError(f"{where}: sparsity.level is unset in a validated spec")
    if level == 0:
        return DenseSchedule()  # nothing to prune, whatever the schedule: no masks to carry
    if isinstance(schedule, GmpSchedule):
        problem = schedule_problem(sparsity, steps)
        if problem:
            raise UserError(f"{where}: {problem}")
        return GradualSchedule(level, *gmp_steps(schedule, steps), schedule.interval)
    if isinstance(schedule, OneshotSchedule):
        return OneShotSchedule(level, round(schedule.at * steps))
    return DenseSchedule()


def build_pattern(sparsity: SparsitySpec) -> Pattern:
    pattern = sparsity.pattern
    return NM(pattern.n, pattern.m) if isinstance(pattern, NmPattern) else Unstructured()


def build_learning_rate(rate, steps: int) -> LearningRateSchedule:
    if isinstance(rate, ConstantRate):
        return constant_lr(rate.value)
    if isinstance(rate, RsqrtRate):
        return rsqrt_lr(rate.peak, rate.warmup_steps, rate.linear_warmup)
    if isinstance(rate, CosineRate):
        return cosine_lr(rate.peak, rate.warmup_steps, steps, rate.final_fraction * rate.peak)
    assert isinstance(rate, WarmupConstantCooldownRate)
    problem = learning_rate_problem(rate, steps)  # planning refuses it first; never shorten the warmup silently
    if problem:
        raise ValueError(f"optimizer.learning_rate: {problem}")
    return warmup_constant_cooldown_lr(rate.peak, rate.warmup_steps, steps, cooldown_steps(rate, steps))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RunSchedules:
    """The numbers that differ between the runs of a sweep: its learning-rate and sparsity
    schedules. They enter the compiled step as arrays, not constants."""

    learning_rate: LearningRateSchedule
    sparsity: Schedule
    # T5's matched embeddings (targets backbone_and_matched_embeddings): the backbone's schedule
    # with the embeddings' own target; None when they are not pruned on their own.
    embedding_sparsity: Schedule | None = None

    def pruning(self) -> Schedule | tuple[Schedule, Schedule]:
        """What masked_pruning follows: one schedule, or one per group of sparsified_tree."""
        if self.embedding_sparsity is None:
            return self.sparsity
        return self.sparsity, self.embedding_sparsity


@dataclass(frozen=True)
class OptimizerRecipe:
    """A run's optimizer with its schedules left out: called with the run's (traced)
    `RunSchedules` it builds the optax transformation. Hashable and compared by value, so every
    run of a sweep with the same recipe shares one compiled step (engine.training.loop.programs_for)."""

    spec: OptimizerSpec  # its learning_rate cleared: the schedule's numbers are RunSchedules'
    pattern: Pattern
    sparsified: tuple[int, ...]  # the sparsified tree's leaves (groups) ...
    sparsified_def: Any = field(repr=False)  # ... and its structure (a hashable PyTreeDef)

    def __call__(self, schedules: RunSchedules, pack_axis: str | None = None) -> optax.GradientTransformation:
        inner = inner_optimizer(self.spec, schedules.learning_rate)
        sparsified = jax.tree.unflatten(self.sparsified_def, self.sparsified)
        return masked_pruning(inner, sparsified, schedules.pruning(), self.pattern, pack_axis)


def optimizer_recipe(spec: OptimizerSpec, sparsified: Any, pattern: Pattern) -> OptimizerRecipe:
    leaves, treedef = jax.tree.flatten(sparsified)
    return OptimizerRecipe(spec.model_copy(update={"learning_rate": None}), pattern, tuple(leaves), treedef)


def inner_optimizer(spec: OptimizerSpec, learning_rate: LearningRateSchedule) -> optax.GradientTransformation:
    """The optimizer the spec names, with the run's learning-rate schedule."""
    if isinstance(spec, AdafactorOptimizer):
        optimizer = adafactor(
            learning_rate,
            decay_rate=spec.decay_rate,
            beta2_cap=spec.beta2_cap,
            clipping_threshold=spec.clip_threshold,
            multiply_by_parameter_scale=spec.relative_step,
            min_param_scale=spec.min_param_scale,
            sparsity_aware=spec.sparsity_aware_rms,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay or None,
            eps=spec.eps,
        )
    else:
        optimizer = adamw(learning_rate, b1=spec.b1, b2=spec.b2, eps=spec.eps,
                          weight_decay=spec.weight_decay)
    if spec.grad_clip_norm is None:
        return optimizer
    # The norm counts unpruned weights' gradients only (docs/science.md: clipping and pruning).
    return optax.chain(clip_by_global_norm(spec.grad_clip_norm), optimizer)


class ContinuedData:
    """A pruned pretrained run's data: the source's stream, continued past what the source saw."""

    def __init__(self, inner: DataSource, offset: int) -> None:
        self.inner, self.offset = inner, offset
        self.examples_per_step = inner.examples_per_step
        self.units_per_example = inner.units_per_example
        self.available_examples = inner.available_examples
        self.fingerprint = inner.fingerprint

        self.process_local = getattr(inner, "process_local", False)

    def batch(self, step: int) -> Batch:
        return self.inner.batch(self.offset + step)

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        return step_batches(self.inner, self.offset + start, self.offset + stop)

    def eval_batches(self) -> list[Batch]:
        return self.inner.eval_batches()


@jax.jit  # one compile per schedule kind, shared by a sweep's runs like their train step
def logged_schedules(schedules: RunSchedules, step: jax.Array) -> dict[str, jax.Array]:
    """The learning rate and sparsity logged after `step` steps: the rate of the update that made
    the step (optax counts updates from 0) and the sparsity the schedule has set the masks to by
    then (their last recomputation was at a count <= step - 1). The masks keep round((1 - s) *
    size) weights of each tensor, so the share of zeros in the sparsified weights is s up to that
    rounding."""
    count = step - 1
    values = {"learning_rate": schedules.learning_rate(count), "sparsity": schedules.sparsity.sparsity_at(count)}
    if schedules.embedding_sparsity is not None:
        values["embedding_sparsity"] = schedules.embedding_sparsity.sparsity_at(count)
    return values


def build_logging(run: RunPlan) -> RunLogging:
    """The run's sinks besides metrics.jsonl (`run.tensorboard`, `run.wandb`); a spec asking for
    W&B without wandb installed fails here, before any training."""
    policy = run.spec.run
    if policy.wandb is None:
        return RunLogging(tensorboard=policy.tensorboard)
    try:
        require_wandb()
    except UserError as error:
        raise UserError(f"run {run.run_id} ({run.experiment}): {error}") from None
    # The plan's record of the run (shape, N, D, sparsity, the resolved spec), less what is local.
    config = {key: value for key, value in run.to_json().items() if key not in ("status", "run_dir")}
    target = WandbTarget(policy.wandb.project, policy.wandb.entity, policy.wandb.mode,
                         run.run_id, run.experiment, config)
    return RunLogging(tensorboard=policy.tensorboard, wandb=target)


def build_setup(run: RunPlan) -> RunSetup:
    """Everything `engine.training.loop.train_run` needs for this planned run."""
    where = f"run {run.run_id} ({run.experiment})"
    dims = run.dims
    params_shape = models.abstract_params(dims)
    load_params = None
    if run.source is not None:
        if run.loads_source():
            try:
                check_source(run.source, params_shape)  # fail here, before the run writes anything
            except UserError as error:
                raise UserError(f"{where}: {error}") from None
        load_params = partial(load_source_params, run.source, params_shape)
    matched = run.embedding_sparsity is not None
    sparsified = sparsified_tree(params_shape, dims, matched_embeddings=matched)
    pattern = build_pattern(run.spec.sparsity)
    try:
        check_pattern(params_shape, sparsified, pattern)  # n:m groups must tile every fan_in
        sparsity = build_schedule(run.spec.sparsity, run.steps, where)
        embedding_sparsity = None
        if matched:  # the backbone's schedule (same steps), to the embeddings' own level
            embedding_spec = run.spec.sparsity.model_copy(update={"level": run.embedding_sparsity})
            embedding_sparsity = with_final_keep(
                build_schedule(embedding_spec, run.steps, where), params_shape, sparsified,
                group=MATCHED_EMBEDDINGS)
        schedules = RunSchedules(
            build_learning_rate(run.spec.optimizer.learning_rate, run.steps),
            with_final_keep(sparsity, params_shape, sparsified),
            embedding_sparsity,
        )
        optimizer = optimizer_recipe(run.spec.optimizer, sparsified, pattern)
        optimizer(schedules)  # the checks that need plain numbers (n:m target) run now
    except ValueError as error:
        raise UserError(f"{where}: {error}") from error
    source = run.spec.data.source
    data = build_source(source.kind, source_settings(run.spec.data), dims, run.batch_size,
                        source.seed, run.spec_dir, run.data_offset + run.steps,
                        process=(jax.process_index(), jax.process_count()))
    if run.data_offset:
        data = ContinuedData(data, run.data_offset)
    policy = run.spec.run
    logging = build_logging(run)
    return RunSetup(
        dims=dims,
        loss_fn=models.loss_fn(dims),
        metrics_fn=models.metrics_fn(dims),
        optimizer=optimizer,
        schedules=schedules,
        schedule_scalars=logged_schedules,
        logging=logging,
        data=data,
        steps=run.steps,
        seed=run.spec.seed,
        eval_every=run.spec.data.eval_every,
        checkpoint_every=policy.checkpoint_every,
        checkpoint_min_seconds=policy.checkpoint_min_seconds,
        keep_checkpoints=policy.keep,
        load_params=load_params,
        layout=build_layout(run.spec.parallelism, params_shape, run.batch_size, where),
    )
