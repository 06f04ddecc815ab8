"""One run's training: a pure jitted step inside one readable loop, with Orbax checkpoints.

The loop knows nothing of specs: engine/training/build.py turns a planned run into a `RunSetup` (model
shape, loss, optimizer with its pruning wrapper, data source, budget), and this module trains it.
Determinism: the batch at step k depends only on the data seed and k, parameters only on the run
seed, so a run resumed from its checkpoint at step k continues bit-identically.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from threadpoolctl import threadpool_limits

from engine.data import DataSource
from engine.data.base import step_batches
from engine.models import Batch, Params, init_params
from engine.planning.sizing import ModelDims
from engine.results import write_status
from engine.training.checkpoint import CheckpointStore
from engine.training.parallel import (
    Layout,
    StepBatch,
    is_primary_process,
    replicate,
    shard_batch,
    single_device_layout,
    state_shardings,
    step_batch,
    with_shardings,
)
from engine.training.run_log import RunLogging, RunLogs

PyTree = Any
ArrayLike = jax.typing.ArrayLike
# The run's schedules (a pytree of numbers) -> its optimizer. Called inside the compiled step with
# the schedules traced, so the numbers that differ between runs are arguments, not constants.
OptimizerFactory = Callable[[PyTree], optax.GradientTransformation]
# (the run's schedules, steps taken) -> named values of the schedules after that step, logged next
# to the losses (the learning rate, the sparsity; engine/training/build.py). Jitted by its maker.
ScheduleScalars = Callable[[PyTree, ArrayLike], dict[str, jax.Array]]


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: steps taken
    params: Params
    opt_state: optax.OptState


@dataclass(frozen=True)
class RunSetup:
    """Everything the loop needs, already built."""

    dims: ModelDims
    loss_fn: Callable[[Params, Batch], jax.Array]
    metrics_fn: Callable[[Params, Batch], dict[str, jax.Array]]
    optimizer: OptimizerFactory  # hashable: runs with equal factories share compiled programs
    data: DataSource
    steps: int
    seed: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int = 10
    # Where parameters start: None draws them from `seed`; `init: pretrained` loads a source's.
    load_params: Callable[[], Params] | None = None
    # Which devices hold what (engine/training/parallel.py); by default the first device holds everything.
    layout: Layout = field(default_factory=single_device_layout)
    # The optimizer's argument: this run's learning-rate and sparsity schedules (engine/training/build.py).
    schedules: PyTree = None
    # What the log shows of the schedules; None: losses and speed only.
    schedule_scalars: ScheduleScalars | None = None
    # Where the scalars go besides metrics.jsonl (engine/training/run_log.py).
    logging: RunLogging = field(default_factory=RunLogging)


class RunDiverged(Exception):
    """The loss became NaN or infinite; the run is recorded as failed at `step`."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"loss is {loss} at step {step}")
        self.step = step


class RunPreempted(Exception):
    """SIGTERM arrived (a preemption notice): the state at `step` is checkpointed and committed;
    the next `engine run` resumes from it."""

    def __init__(self, step: int) -> None:
        super().__init__(f"preempted by SIGTERM; checkpoint saved at step {step}")
        self.step = step


class _StopSignals:
    """Turns SIGTERM and SIGINT into flags the loop checks between steps.

    SIGTERM (a preemption notice; Orbax's own preemption check needs jax.distributed) checkpoints
    and stops. SIGINT (Ctrl-C) stops between two steps by raising KeyboardInterrupt there: raised
    wherever the main thread happened to be, it could land inside Orbax's save, which logs it and
    goes on, so the run would continue to its end. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.preempted = False
        self.interrupted = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._preempt)
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def _preempt(self, signum: int, frame: FrameType | None) -> None:
        self.preempted = True

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


@dataclass(frozen=True)
class RunOutcome:
    final_eval_loss: float
    steps: int
    wall_s: float
    resumed_from: int | None


# The pure step, tested without jit (nanodo style); compiled once per program (see Programs).
def train_step(
    state: TrainState,
    batch: Batch,
    loss_fn: Callable[[Params, Batch], jax.Array],
    optimizer: optax.GradientTransformation,
) -> tuple[TrainState, jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss


def fresh_state(params: Params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros([], jnp.int32), params, optimizer.init(params))


def initial_state(setup: RunSetup) -> TrainState:
    """The run's state at step 0, computed op by op (for tests and inspection; runs use Programs)."""
    if setup.load_params is not None:
        params = setup.load_params()
    else:
        params = init_params(setup.dims, jax.random.key(setup.seed))
    return fresh_state(params, setup.optimizer(setup.schedules))


@dataclass(frozen=True)
class Programs:
    """A run's jitted functions and its state's layout. They depend only on the model, the loss,
    the optimizer factory, the structure of the schedules and the layout, never on a run's numbers
    (seed, schedules: arguments), so every run of a sweep that shares these shares one Programs:
    its later runs neither trace nor compile."""

    target: TrainState  # shapes, dtypes and shardings of the state: the restore target
    shardings: TrainState
    init: Callable[[ArrayLike, PyTree], TrainState]  # (seed, schedules) -> the state at step 0
    start_from: Callable[[Params, PyTree], TrainState]  # (loaded params, schedules) -> the same
    step: Callable[[TrainState, StepBatch, PyTree], tuple[TrainState, jax.Array]]
    eval: Callable[[Params, Batch], dict[str, jax.Array]]
    # A copy of the state in one program: an async save reads it while the next step donates
    # the original buffers.
    snapshot: Callable[[TrainState], TrainState]


def programs_for(setup: RunSetup) -> Programs:
    leaves, treedef = jax.tree.flatten(setup.schedules)
    signature = tuple(jax.ShapeDtypeStruct(np.shape(leaf), jnp.asarray(leaf).dtype) for leaf in leaves)
    key = (setup.dims, setup.loss_fn, setup.metrics_fn, setup.optimizer, setup.layout, treedef, signature)
    if key not in _kept_programs:
        # One shape's programs at a time: the runs of a shape usually follow one another (a grid
        # with data.steps as its last axis, as in vit_sweep), and JAX keeps every program it has
        # compiled until its caches are cleared (~30 MiB per ViT shape here), so a sweep of many
        # shapes would grow without bound. A shape met again is traced again and its compiled
        # code comes from the persistent compilation cache.
        forget_programs()
        _kept_programs[key] = _compile_programs(*key)
    return _kept_programs[key]


_kept_programs: dict[tuple[Any, ...], Programs] = {}


def forget_programs() -> None:
    """Drop the kept programs and everything JAX has compiled in this process."""
    _kept_programs.clear()
    jax.clear_caches()


def _compile_programs(
    dims: ModelDims,
    loss_fn: Callable[[Params, Batch], jax.Array],
    metrics_fn: Callable[[Params, Batch], dict[str, jax.Array]],
    optimizer: OptimizerFactory,
    layout: Layout,
    schedules_def: Any,
    schedules_signature: tuple[jax.ShapeDtypeStruct, ...],
) -> Programs:
    def fresh(seed: jax.Array, schedules: PyTree) -> TrainState:
        return fresh_state(init_params(dims, jax.random.key(seed)), optimizer(schedules))

    abstract_schedules = jax.tree.unflatten(schedules_def, schedules_signature)
    shapes = jax.eval_shape(fresh, jax.ShapeDtypeStruct((), jnp.int32), abstract_schedules)
    shardings = state_shardings(shapes, shapes.params, layout)
    # Parameters are created directly in their layout: no device ever holds a whole sharded tensor.
    return Programs(
        target=with_shardings(shapes, shardings),
        shardings=shardings,
        init=jax.jit(fresh, out_shardings=shardings, compiler_options=_init_compiler_options(layout)),
        start_from=jax.jit(lambda params, schedules: fresh_state(params, optimizer(schedules)),
                           out_shardings=shardings),
        step=jax.jit(
            lambda state, batch, schedules: train_step(state, batch, loss_fn, optimizer(schedules)),
            in_shardings=(shardings, layout.batch_sharding, layout.replicated),
            out_shardings=(shardings, layout.replicated),
            donate_argnums=0,
        ),
        eval=jax.jit(metrics_fn, out_shardings=layout.replicated),
        snapshot=jax.jit(lambda state: jax.tree.map(jnp.copy, state), out_shardings=shardings),
    )


def _init_compiler_options(layout: Layout) -> dict[str, Any]:
    """The init runs once per run, so its compile time is what counts: on CPU, LLVM's level 1
    compiles a vit_sweep init in 0.84 s instead of 1.76 s (the random draws dominate) and gives
    the same parameters bit for bit (tests/test_train.py). Level 0 changes them."""
    if all(device.platform == "cpu" for device in layout.mesh.devices.flat):
        return {"xla_backend_optimization_level": 1}
    return {}


def place_initial_state(setup: RunSetup, programs: Programs, schedules: PyTree) -> TrainState:
    """The state at step 0, laid out as the run's layout says."""
    if setup.load_params is not None:
        return programs.start_from(setup.load_params(), schedules)
    return programs.init(np.int32(setup.seed), schedules)


def evaluate(
    eval_step: Callable[[Params, Batch], dict[str, jax.Array]], params: Params, batches: list[Batch]
) -> float:
    """Weighted mean loss over the fixed validation set (the same definition as training)."""
    loss_sum, weight = 0.0, 0.0
    for batch in batches:
        metrics = eval_step(params, batch)
        loss_sum += float(np.sum(metrics["loss_sum"]))  # on the host: no extra program per shape
        weight += float(np.sum(metrics["weight"]))
    return loss_sum / weight


def schedule_values(setup: RunSetup, schedules: PyTree, done: int) -> dict[str, float]:
    """The schedules' values logged after `done` steps: one small compiled call per record, made
    where the loop already waits for the losses (so it adds no synchronisation)."""
    if setup.schedule_scalars is None:
        return {}
    values = jax.device_get(setup.schedule_scalars(schedules, np.int32(done)))
    return {name: float(value) for name, value in values.items()}


StepCallback = Callable[[int, float], None]


def train_run(
    setup: RunSetup,
    run_dir: Path,
    on_progress: StepCallback | None = None,
) -> RunOutcome:
    """Train (or resume) one run to `setup.steps`; checkpoints under run_dir/checkpoints.

    Returns the final validation loss. Raises RunDiverged on a NaN/inf training loss (the caller
    records the failure) and RunPreempted after saving a checkpoint when SIGTERM arrives."""
    started = time.perf_counter()
    store = CheckpointStore(run_dir / "checkpoints", keep=setup.keep_checkpoints)
    programs = programs_for(setup)
    layout = setup.layout
    schedules = replicate(setup.schedules, layout)  # on the devices once, not every step
    # Resuming is not an init: a run with its own checkpoints continues from them, laid out on
    # this run's mesh whatever mesh saved them.
    restored = store.restore_latest(programs.target)
    resumed_from = None
    if restored is not None:
        state, resumed_from = restored.state, restored.step
    else:
        state = place_initial_state(setup, programs, schedules)
    start = int(state.step)
    primary = is_primary_process()  # one process writes metrics and status; all of them train
    logs: RunLogs | None = None
    step_fn, eval_step = programs.step, programs.eval
    eval_batches = [shard_batch(batch, layout) for batch in setup.data.eval_batches()]

    def checkpoint(step: int) -> None:
        store.save(step, programs.snapshot(state), {"step": step})
        if primary:
            write_status(run_dir, "running", step)
        if logs is not None:
            logs.flush()  # what TensorBoard shows keeps up with the checkpoints

    # Sources of the prepared cache read the next batches while a step computes.
    batches = step_batches(setup.data, start, setup.steps)
    local = getattr(setup.data, "process_local", False)  # this process's rows only
    # One BLAS thread while training: numpy's (the synthetic data's teacher network) would otherwise
    # compete with XLA's threads for the same cores; batches are bit-identical either way.
    failed = True  # until the run has trained to its end
    with _StopSignals() as signals, threadpool_limits(limits=1, user_api="blas"):
        try:
            if primary:
                logs = RunLogs(run_dir, start, setup.logging)
            pending: list[tuple[int, jax.Array]] = []  # losses not yet read back: dispatch stays async
            window_start, window_steps = time.perf_counter(), 0
            for step in range(start, setup.steps):
                state, loss = step_fn(state, step_batch(next(batches), layout, local), schedules)
                pending.append((step + 1, loss))
                window_steps += 1
                done = step + 1
                evaluate_now = done % setup.eval_every == 0 or done == setup.steps
                if evaluate_now or done % setup.log_every == 0:
                    losses = [(k, float(value)) for k, value in pending]
                    pending.clear()
                    for k, value in losses:
                        if not math.isfinite(value):
                            raise RunDiverged(k, value)
                    elapsed = time.perf_counter() - window_start
                    record = {"step": done, "train_loss": losses[-1][1],
                              "steps_per_s": window_steps / max(elapsed, 1e-9),
                              **schedule_values(setup, schedules, done)}
                    window_start, window_steps = time.perf_counter(), 0
                    if evaluate_now:
                        record["eval_loss"] = evaluate(eval_step, state.params, eval_batches)
                    if logs is not None:
                        logs.write(record)
                    if on_progress is not None:
                        on_progress(done, losses[-1][1])
                if signals.interrupted:
                    raise KeyboardInterrupt  # between steps: the sweep records where it stopped
                if signals.preempted and done != setup.steps:
                    checkpoint(done)
                    store.wait()  # committed, with its manifest, before we say so
                    raise RunPreempted(done)
                if done % setup.checkpoint_every == 0 and done != setup.steps:
                    checkpoint(done)
            # The loop evaluated its last step; a run restored at its end evaluates here.
            final_loss = (record["eval_loss"] if start < setup.steps
                          else evaluate(eval_step, state.params, eval_batches))
            if start < setup.steps or not store.steps():
                store.save(setup.steps, state, {"step": setup.steps, "eval_loss": final_loss})
            store.wait()
            failed = not math.isfinite(final_loss)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a run that stops early stops its prefetch thread
            store.close()
            if logs is not None:
                logs.close(failed)
    if not math.isfinite(final_loss):
        raise RunDiverged(setup.steps, final_loss)
    return RunOutcome(final_loss, setup.steps, time.perf_counter() - started, resumed_from)
