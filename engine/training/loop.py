"""One run's training: a pure jitted step inside one readable loop, with Orbax checkpoints.

The loop knows nothing of specs: engine/training/build.py turns a planned run into a `RunSetup` (model
shape, loss, optimizer with its pruning wrapper, data source, budget), and this module trains it.
Determinism: the batch at step k depends only on the data seed and k, parameters only on the run
seed, so a run resumed from its checkpoint at step k continues bit-identically.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, Protocol

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
    agree,
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
class OptimizerFactory(Protocol):
    """The run's schedules (a pytree of numbers) -> its optimizer. Called inside the compiled step
    with the schedules traced, so the numbers that differ between runs are arguments, not
    constants; `pack_axis` names the vmap axis when the step trains a pack of runs."""

    def __call__(self, schedules: PyTree, pack_axis: str | None = None) -> optax.GradientTransformation: ...
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
    # A save checkpoint_every calls for is skipped within this many seconds of the run's last save
    # or start (short runs pay for few saves); None: every checkpoint_every steps.
    checkpoint_min_seconds: float | None = None
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


def programs_key(setup: RunSetup) -> tuple[Any, ...]:
    """What a run's compiled programs depend on: runs with equal keys share them (and may share
    a pack)."""
    leaves, treedef = jax.tree.flatten(setup.schedules)
    signature = tuple(jax.ShapeDtypeStruct(np.shape(leaf), jnp.asarray(leaf).dtype) for leaf in leaves)
    return (setup.dims, setup.loss_fn, setup.metrics_fn, setup.optimizer, setup.layout, treedef, signature,
            setup.data.examples_per_step)


def programs_for(setup: RunSetup) -> Programs:
    key = programs_key(setup)
    if key not in _kept_programs:
        warming = _warming.pop(key, None)
        programs = warming.result() if warming is not None else _compile_programs(key, _batch_shapes(setup))
        # One shape's programs at a time: the runs of a shape usually follow one another (a grid
        # with data.steps as its last axis, as in vit_sweep), and JAX keeps every program it has
        # compiled until its caches are cleared (~30 MiB per ViT shape here), so a sweep of many
        # shapes would grow without bound. A shape met again is traced again and its compiled
        # code comes from the persistent compilation cache. (The step and init compiled ahead of
        # time are the Programs' own and survive the clearing.)
        forget_programs()
        _kept_programs[key] = programs
    return _kept_programs[key]


def warm_programs(setup: RunSetup) -> None:
    """Start tracing and compiling `setup`'s train step and init in a background thread, so that
    the run which next calls programs_for(setup) finds them ready (train_pack warms the next
    shape this way while the current one trains on an accelerator)."""
    key = programs_key(setup)
    if key in _kept_programs or key in _warming or jax.process_count() > 1:
        return
    _warming[key] = _warmer.submit(_compile_programs, key, _batch_shapes(setup))


_kept_programs: dict[tuple[Any, ...], Programs] = {}
_warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-programs")
_warming: dict[tuple[Any, ...], Future[Programs]] = {}


def forget_programs() -> None:
    """Drop the kept programs, those being warmed, and everything JAX has compiled in this process."""
    for warming in _warming.values():
        if not warming.cancel():
            warming.exception()  # JAX's caches are not cleared under a compile in flight
    _warming.clear()
    _kept_programs.clear()
    _kept_packs.clear()
    jax.clear_caches()


def _batch_shapes(setup: RunSetup) -> PyTree | None:
    """The shapes of a training batch, to compile the step ahead of time; None across processes,
    where the step's batch is a global array built from each process's rows (compiled at its
    first call instead)."""
    if jax.process_count() > 1:
        return None
    return jax.tree.map(lambda array: jax.ShapeDtypeStruct(np.shape(array), np.asarray(array).dtype),
                        setup.data.batch(0))


def _compile_programs(key: tuple[Any, ...], batch_shapes: PyTree | None) -> Programs:
    dims, loss_fn, metrics_fn, optimizer, layout, schedules_def, schedules_signature, _ = key

    def fresh(seed: jax.Array, schedules: PyTree) -> TrainState:
        return fresh_state(init_params(dims, jax.random.key(seed)), optimizer(schedules))

    abstract_schedules = jax.tree.unflatten(schedules_def, schedules_signature)
    abstract_seed = jax.ShapeDtypeStruct((), jnp.int32)
    shapes = jax.eval_shape(fresh, abstract_seed, abstract_schedules)
    shardings = state_shardings(shapes, shapes.params, layout)
    target = with_shardings(shapes, shardings)
    # Parameters are created directly in their layout: no device ever holds a whole sharded tensor.
    lazy_init = jax.jit(fresh, out_shardings=shardings, compiler_options=_init_compiler_options(layout))
    lazy_step = jax.jit(
        lambda state, batch, schedules: train_step(state, batch, loss_fn, optimizer(schedules)),
        in_shardings=(shardings, layout.batch_sharding, layout.replicated),
        out_shardings=(shardings, layout.replicated),
        donate_argnums=0,
    )
    init: Callable[..., Any] = lazy_init
    step: Callable[..., Any] = lazy_step
    if batch_shapes is not None:  # compiled now: the executables are this Programs' own
        init = lazy_init.lower(abstract_seed, abstract_schedules).compile()
        step = lazy_step.lower(target, batch_shapes, abstract_schedules).compile()
    return Programs(
        target=target,
        shardings=shardings,
        init=init,
        start_from=jax.jit(lambda params, schedules: fresh_state(params, optimizer(schedules)),
                           out_shardings=shardings),
        step=step,
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

# The vmap axis of a run pack: runs of one shape trained as one program, each along its own slice.
PACK_AXIS = "runs"


@dataclass(frozen=True)
class PackPrograms:
    """A pack's compiled step (vmapped over a leading run axis of the state, batch and schedules)
    and how to read one run back out of the stacked state."""

    step: Callable[[TrainState, Batch, PyTree, ArrayLike], tuple[TrainState, jax.Array]]
    member: Callable[[TrainState, ArrayLike], TrainState]


def pack_programs_for(setup: RunSetup, size: int) -> PackPrograms:
    """The vmapped programs of `size` runs shaped like `setup` (kept with the shape's Programs)."""
    key = (*programs_key(setup), size)
    if key not in _kept_packs:
        programs_for(setup)  # a new shape forgets the previous shape's programs, packs included
        _kept_packs[key] = _compile_pack(setup.loss_fn, setup.optimizer)
    return _kept_packs[key]


_kept_packs: dict[tuple[Any, ...], PackPrograms] = {}


def _compile_pack(loss_fn: Callable[[Params, Batch], jax.Array], optimizer: OptimizerFactory) -> PackPrograms:
    def step(state: TrainState, batch: Batch, schedules: PyTree, active: ArrayLike) -> tuple[TrainState, jax.Array]:
        new, loss = train_step(state, batch, loss_fn, optimizer(schedules, pack_axis=PACK_AXIS))
        # A run past its end keeps its state while the longer runs of its pack go on.
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), loss

    return PackPrograms(
        step=jax.jit(jax.vmap(step, axis_name=PACK_AXIS), donate_argnums=0),
        member=jax.jit(lambda state, index: jax.tree.map(lambda leaf: leaf[index], state)),
    )


# Bytes per activation value kept for the backward pass, per token and width unit of a block
# (attention and MLP inputs, normalisations, the MLP's wider hidden layer, float32): a generous
# estimate, since a pack that does not fit fails where a smaller one would have trained.
_ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER = 4 * 24


def pack_capacity(setup: RunSetup, memory_bytes: int | None = None) -> int:
    """How many runs shaped like `setup` one pack holds by default: half of an accelerator's
    memory over one run's estimated training footprint (parameters, gradients and optimizer state,
    twice while a step replaces them, plus the activations of its batch). On a CPU, 1: one run's
    step already keeps its cores busy, and a vmapped pack trained no faster than its runs one
    after another (BENCHMARKS.md); `memory_bytes` overrides the device's memory."""
    device = setup.layout.mesh.devices.flat[0]
    if memory_bytes is None:
        if device.platform == "cpu":
            return 1
        memory_bytes = _device_memory(device)
    state = jax.eval_shape(lambda: fresh_state(init_params(setup.dims, jax.random.key(0)), setup.optimizer(setup.schedules)))
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))
    dims = setup.dims
    tokens = setup.data.examples_per_step * setup.data.units_per_example
    activations = tokens * dims.d_model * (dims.layers + dims.decoder_layers) * _ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER
    per_run = 3 * state_bytes + activations
    return max(1, int(memory_bytes // 2 // per_run))


def _device_memory(device: jax.Device) -> int:
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # a device that does not say: the host's


def stack(trees: list[PyTree]) -> PyTree:
    """Trees of equal structure as one tree with a leading axis (a pack's runs)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@dataclass(eq=False)
class _Member:
    """One run of a pack, as the loop tracks it on the host: its own checkpoints, logs, data and
    outcome, exactly what it would have trained alone."""

    setup: RunSetup
    run_dir: Path
    on_progress: StepCallback | None
    store: CheckpointStore
    state: TrainState  # where it starts (restored or fresh); the pack's stacked state takes over
    resumed_from: int | None
    started: float
    saved_at: float  # when its last checkpoint was saved (or it started)
    eval_batches: list[Batch] = field(default_factory=list)
    logs: RunLogs | None = None
    done: int = 0
    pending: list[tuple[int, jax.Array]] = field(default_factory=list)  # losses not yet read back
    window: tuple[float, int] = (0.0, 0)  # (start, steps) of the steps/s window
    outcome: RunOutcome | RunDiverged | RunPreempted | None = None

    @property
    def training(self) -> bool:
        return self.outcome is None and self.done < self.setup.steps


def train_run(
    setup: RunSetup,
    run_dir: Path,
    on_progress: StepCallback | None = None,
) -> RunOutcome:
    """Train (or resume) one run to `setup.steps`; checkpoints under run_dir/checkpoints.

    Returns the final validation loss. Raises RunDiverged on a NaN/inf training loss (the caller
    records the failure) and RunPreempted after saving a checkpoint when SIGTERM arrives."""
    [outcome] = train_pack([(setup, run_dir, on_progress)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def train_pack(
    runs: list[tuple[RunSetup, Path, StepCallback | None]],
    warm_next: RunSetup | None = None,
) -> list[RunOutcome | RunDiverged | RunPreempted]:
    """Train (or resume) runs that share one compiled shape together, as one vmapped program with
    a leading run axis (one run: its plain program, on its own layout). Each run keeps its own
    checkpoints, logs and outcome, in order; a run that diverges stops there and the others go on;
    a shorter run stops updating at its end. Runs of different lengths, schedules, seeds and
    resume points share a pack; they must share `programs_key` and the batch shape.

    vmap batches the matmuls, so a run's numbers may differ from its training alone in the last
    bits (reduction order), never more: tests/test_packs.py bounds the difference. `warm_next`: the
    setup of what trains next, compiled in the background meanwhile on an accelerator."""
    packed = len(runs) > 1
    first = runs[0][0]
    if packed and any(programs_key(setup) != programs_key(first) for setup, _, _ in runs):
        raise ValueError("the runs of a pack must share their compiled programs (programs_key)")
    if packed and (first.layout.mesh.size > 1 or jax.process_count() > 1):
        raise ValueError("runs on several devices or processes train alone, not in packs")
    programs = programs_for(first)
    # An accelerator's host is mostly idle while it trains: the next shape compiles meanwhile. Not
    # on a CPU, where the compile takes the cores the steps need (on 2 cores, 18 runs of vit_sweep
    # took 75 and 79 s with it against 69 and 62 s without).
    if warm_next is not None and first.layout.mesh.devices.flat[0].platform != "cpu":
        warm_programs(warm_next)
    members = [_start_member(setup, run_dir, on_progress, programs) for setup, run_dir, on_progress in runs]
    primary = is_primary_process()  # one process writes metrics and status; all of them train
    layout = first.layout
    local = getattr(first.data, "process_local", False)  # this process's rows only
    # One BLAS thread while training: numpy's (the synthetic data's teacher network) would otherwise
    # compete with XLA's threads for the same cores; batches are bit-identical either way.
    with _StopSignals() as signals, threadpool_limits(limits=1, user_api="blas"):
        feeds = _Feeds(members)
        try:
            for member in members:
                member.eval_batches = [shard_batch(batch, layout) for batch in member.setup.data.eval_batches()]
                if primary:
                    member.logs = RunLogs(member.run_dir, member.done, member.setup.logging)
                if not member.training:  # restored at its end: evaluated and kept as it is
                    _finish(member, evaluate(programs.eval, member.state.params, member.eval_batches), primary)
            schedules = (stack([m.setup.schedules for m in members]) if packed
                         else replicate(first.schedules, layout))  # on the devices once, not every step
            state = stack([m.state for m in members]) if packed else members[0].state
            for member in members:
                member.state = None  # type: ignore[assignment]  # the pack's state holds it now
            pack = pack_programs_for(first, len(members)) if packed else None

            def member_state(index: int) -> TrainState:
                """A run's state out of the pack: a copy, which an async save may read while the
                next step donates the pack's buffers."""
                return pack.member(state, np.int32(index)) if pack is not None else programs.snapshot(state)

            def member_params(index: int) -> Params:
                """A run's parameters to evaluate now (the evaluation ends before the next step)."""
                return pack.member(state, np.int32(index)).params if pack is not None else state.params

            def checkpoint(index: int, member: _Member) -> None:
                member.store.save(member.done, member_state(index), {"step": member.done})
                member.saved_at = time.perf_counter()
                if primary:
                    write_status(member.run_dir, "running", member.done)
                if member.logs is not None:
                    member.logs.flush()  # what TensorBoard shows keeps up with the checkpoints

            for member in members:
                member.window = (time.perf_counter(), 0)
            while any(member.training for member in members):
                training = [member.training for member in members]
                batches = feeds.next(training)
                if pack is not None:
                    state, losses = pack.step(state, stack(batches), schedules, np.asarray(training))
                else:
                    state, losses = programs.step(state, step_batch(batches[0], layout, local), schedules)  # type: ignore[arg-type]
                for index, member in enumerate(members):
                    if not training[index]:
                        continue
                    member.done += 1
                    member.pending.append((member.done, losses))
                    member.window = (member.window[0], member.window[1] + 1)
                    setup, done = member.setup, member.done
                    evaluate_now = done % setup.eval_every == 0 or done == setup.steps
                    if evaluate_now or done % setup.log_every == 0:
                        last = _read_losses(member, index, packed)
                        if last is None:  # diverged: this run stops, the pack goes on without it
                            continue
                        final = member_state(index) if done == setup.steps else None  # evaluated and saved
                        params = final.params if final is not None else member_params(index) if evaluate_now else None
                        record = _log_record(member, last, params, programs.eval)
                        if final is not None:
                            _finish(member, record["eval_loss"], primary, final)
                            continue
                    if save_due(setup, done, member.saved_at):
                        checkpoint(index, member)
                if signals.interrupted:
                    raise KeyboardInterrupt  # between steps: the sweep records where each run stopped
                if signals.preempted:
                    for index, member in enumerate(members):
                        if member.training:
                            checkpoint(index, member)
                            member.store.wait()  # committed, with its manifest, before we say so
                            member.outcome = RunPreempted(member.done)
            for member in members:
                member.store.wait()
        finally:
            feeds.close()  # a run that stops early stops its prefetch threads
            for member in members:
                member.store.close()
                if member.logs is not None:
                    member.logs.close(not isinstance(member.outcome, RunOutcome))
    outcomes = [member.outcome for member in members]
    assert all(outcome is not None for outcome in outcomes)  # every run ended one way or another
    return outcomes  # type: ignore[return-value]


def _start_member(setup: RunSetup, run_dir: Path, on_progress: StepCallback | None, programs: Programs) -> _Member:
    """A run where it starts: its latest checkpoint (resuming is not an init: a run with its own
    checkpoints continues from them, laid out on this run's mesh whatever mesh saved them), else
    step 0."""
    started = time.perf_counter()
    store = CheckpointStore(run_dir / "checkpoints", keep=setup.keep_checkpoints)
    restored = store.restore_latest(programs.target)
    if restored is not None:
        state, resumed_from = restored.state, restored.step
    else:
        state, resumed_from = place_initial_state(setup, programs, replicate(setup.schedules, setup.layout)), None
    member = _Member(setup, run_dir, on_progress, store, state, resumed_from, started, saved_at=started)
    member.done = int(state.step)
    return member


def save_due(setup: RunSetup, done: int, saved_at: float) -> bool:
    """Whether a run saves after `done` steps, its last save or start having been at `saved_at`
    (time.perf_counter): every checkpoint_every steps, unless checkpoint_min_seconds have not
    passed yet. The clock is read only at those steps. Every process of a multi-host run must take
    the same decision (the save is collective): process 0's."""
    if done % setup.checkpoint_every:
        return False
    if setup.checkpoint_min_seconds is None:
        return True
    return agree(time.perf_counter() - saved_at >= setup.checkpoint_min_seconds)


def _read_losses(member: _Member, index: int, packed: bool) -> float | None:
    """The member's losses since the last read (this waits for their steps); its last one, or
    None after recording a NaN/inf one as the run's divergence."""
    losses = [(k, float(value[index] if packed else value)) for k, value in member.pending]
    member.pending.clear()
    for k, value in losses:
        if not math.isfinite(value):
            member.outcome = RunDiverged(k, value)
            return None
    return losses[-1][1]


def _log_record(
    member: _Member, train_loss: float, params: Params | None, eval_step: Callable[[Params, Batch], dict[str, jax.Array]]
) -> dict[str, float]:
    """Write the member's log record after its `done` steps (with an evaluation when `params`)."""
    setup, done = member.setup, member.done
    started, steps = member.window
    record = {"step": done, "train_loss": train_loss,
              "steps_per_s": steps / max(time.perf_counter() - started, 1e-9),
              **schedule_values(setup, setup.schedules, done)}
    member.window = (time.perf_counter(), 0)
    if params is not None:
        record["eval_loss"] = evaluate(eval_step, params, member.eval_batches)
    if member.logs is not None:
        member.logs.write(record)
    if member.on_progress is not None:
        member.on_progress(done, train_loss)
    return record


def _finish(member: _Member, final_loss: float, primary: bool, state: TrainState | None = None) -> None:
    """A member at its last step: its final checkpoint (unless it was restored at its end) and outcome."""
    if state is not None or not member.store.steps():
        member.store.save(member.setup.steps, state if state is not None else member.state,
                          {"step": member.setup.steps, "eval_loss": final_loss})
    if not math.isfinite(final_loss):
        member.outcome = RunDiverged(member.setup.steps, final_loss)
        return
    member.outcome = RunOutcome(final_loss, member.setup.steps, time.perf_counter() - member.started,
                                member.resumed_from)


class _Feeds:
    """The batches of a pack's runs at their next steps. Runs reading the same data from the same
    step share one reader (a sweep's runs mostly do); prepared-cache sources read ahead while a
    step computes."""

    def __init__(self, members: list[_Member]) -> None:
        self.readers: dict[tuple[Any, ...], Any] = {}
        self.keys = [(m.setup.data.fingerprint, type(m.setup.data).__name__, getattr(m.setup.data, "offset", 0), m.done)
                     for m in members]
        for key, member in zip(self.keys, members, strict=True):
            if key not in self.readers:
                stop = max(m.setup.steps for k, m in zip(self.keys, members, strict=True) if k == key)
                self.readers[key] = step_batches(member.setup.data, member.done, max(stop, member.done))

    def next(self, training: list[bool]) -> list[Batch]:
        """One batch per run; a run that no longer trains gets another run's (its update is dropped)."""
        fresh: dict[tuple[Any, ...], Batch] = {}
        for key, wanted in zip(self.keys, training, strict=True):
            if wanted and key not in fresh:
                fresh[key] = next(self.readers[key])
        filler = next(iter(fresh.values()))
        return [fresh.get(key, filler) for key in self.keys]

    def close(self) -> None:
        for reader in self.readers.values():
            close = getattr(reader, "close", None)
            if close is not None:
                close()
