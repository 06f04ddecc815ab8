"""Sweep efficiency and memory: the default sweep trained in-process by engine.study.sweep.train_sweep,
with its time split into compile, data, checkpoint, eval, step and the rest.

The engine is not edited for this: the bench wraps, for the duration of the sweep only,
- engine.training.loop.programs_for and pack_programs_for, so that each compiled train step (one run's, or
  a pack's) is wrapped in a timer that
  blocks on each step's result (so a step's compute is charged to the step, not to whatever call
  happens to wait for it next; this removes the loop's overlap of data generation with compute,
  so the wall time is a little longer than an unmeasured sweep's);
- the data source's batch() and eval_batches(), engine.training.loop.evaluate, and CheckpointStore;
- JAX's compile-duration events (tracing, lowering, XLA compile or persistent-cache load) in the sweep's
  own thread, charged to "compile" and taken out of the bucket they happened in; the next shape's
  compile in the background (engine.training.loop.warm_programs) is charged only for the time the
  sweep waits for it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
from rich.console import Console

import engine.data.synthetic
import engine.study.sweep
import engine.training.loop
from bench.timing import reset_peak_rss, rss_bytes
from engine.planning.plan import RunPlan, plan_experiment

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = REPO / "experiments" / "vit_sweep.yaml"
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
BUCKETS = ("step", "compile", "data", "eval", "checkpoint", "other")


@dataclass
class SweepTiming:
    runs: int = 0
    steps: int = 0
    wall_s: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cache_hits: int = 0
    cache_misses: int = 0
    rss_before: int = 0  # bytes, the process before the sweep (imports, earlier passes)
    peak_rss: int = 0  # bytes, the whole sweep
    run_peak_rss: list[int] = field(default_factory=list)  # bytes, each pack (a run, on a CPU)
    rss_after_run: list[int] = field(default_factory=list)  # bytes, after each pack
    kept_after_run: list[int] = field(default_factory=list)  # bytes of synthetic batches kept, after each pack

    @property
    def efficiency(self) -> float:
        return self.seconds["step"] / self.wall_s

    def split(self) -> dict[str, float]:
        """Seconds per bucket; "other" is the wall time no bucket claims (loop, logging, status
        files, results, progress display, planning the setup)."""
        named = {name: self.seconds[name] for name in BUCKETS if name != "other"}
        return named | {"other": self.wall_s - sum(named.values())}


class _Clock:
    """Accumulates seconds per bucket; compile events during a bucket's call move to "compile"."""

    def __init__(self, timing: SweepTiming) -> None:
        self.timing = timing
        self.compile_seconds = 0.0

    def on_duration(self, event: str, seconds: float, **_: Any) -> None:
        # The next shape's programs compile in a background thread while a run trains
        # (warm_programs): only what the sweep's own thread spends compiling is charged.
        if event in COMPILE_EVENTS and threading.current_thread() is threading.main_thread():
            self.compile_seconds += seconds

    def on_event(self, event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self.timing.cache_hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.timing.cache_misses += 1

    def timed(self, bucket: str, function: Callable[..., Any], block: bool = False) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            compiled_before, started = self.compile_seconds, time.perf_counter()
            result = function(*args, **kwargs)
            if block:
                jax.block_until_ready(result)
            compiling = self.compile_seconds - compiled_before
            self.timing.seconds[bucket] += time.perf_counter() - started - compiling
            return result

        return wrapper


class _TimedData:
    def __init__(self, data: Any, clock: _Clock) -> None:
        self._data = data
        for name in ("examples_per_step", "units_per_example", "available_examples", "fingerprint"):
            setattr(self, name, getattr(data, name))
        self.batch = clock.timed("data", data.batch)
        self.eval_batches = clock.timed("data", data.eval_batches)


def _timed_store(clock: _Clock) -> type:
    base = engine.training.loop.CheckpointStore

    class TimedStore(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            clock.timed("checkpoint", super().__init__)(*args, **kwargs)

    for name in ("save", "wait", "close", "restore_latest", "steps"):
        original = getattr(base, name)
        setattr(TimedStore, name, lambda self, *a, _f=original, **k: clock.timed("checkpoint", _f)(self, *a, **k))
    return TimedStore


@contextmanager
def instrumented(timing: SweepTiming) -> Iterator[None]:
    """Patch engine.training.loop / engine.study.sweep for one measured sweep, and undo it afterwards."""
    clock = _Clock(timing)
    saved = {(engine.training.loop, "programs_for"): engine.training.loop.programs_for,
             (engine.training.loop, "evaluate"): engine.training.loop.evaluate,
             (engine.training.loop, "CheckpointStore"): engine.training.loop.CheckpointStore,
             (engine.training.loop, "pack_programs_for"): engine.training.loop.pack_programs_for,
             (engine.study.sweep, "build_setup"): engine.study.sweep.build_setup,
             (engine.study.sweep, "train_pack"): engine.study.sweep.train_pack}
    build_setup, train_pack = engine.study.sweep.build_setup, engine.study.sweep.train_pack
    programs_for, pack_programs_for = engine.training.loop.programs_for, engine.training.loop.pack_programs_for

    def timed_programs(setup: Any) -> Any:
        programs = clock.timed("compile", programs_for)(setup)  # and any wait for a warm-up
        return replace(programs, step=clock.timed("step", programs.step, block=True))

    def timed_pack_programs(setup: Any, size: int) -> Any:
        programs = pack_programs_for(setup, size)
        return replace(programs, step=clock.timed("step", programs.step, block=True))

    def timed_build(run: RunPlan) -> Any:
        setup = build_setup(run)
        return replace(setup, data=_TimedData(setup.data, clock))

    def measured_pack(*args: Any, **kwargs: Any) -> Any:
        reset_peak_rss()
        outcomes = train_pack(*args, **kwargs)
        current, peak = rss_bytes()
        timing.run_peak_rss.append(peak)
        timing.rss_after_run.append(current)
        timing.kept_after_run.append(engine.data.synthetic.recent_batches.bytes)
        timing.runs += len(outcomes)
        timing.steps += sum(outcome.steps - (outcome.resumed_from or 0) for outcome in outcomes)
        return outcomes

    engine.training.loop.programs_for = timed_programs
    engine.training.loop.pack_programs_for = timed_pack_programs
    engine.training.loop.evaluate = clock.timed("eval", engine.training.loop.evaluate)
    engine.training.loop.CheckpointStore = _timed_store(clock)
    engine.study.sweep.build_setup = timed_build
    engine.study.sweep.train_pack = measured_pack
    jax.monitoring.register_event_duration_secs_listener(clock.on_duration)
    jax.monitoring.register_event_listener(clock.on_event)
    try:
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
        jax.monitoring.unregister_event_duration_listener(clock.on_duration)
        jax.monitoring.unregister_event_listener(clock.on_event)
        timing.seconds["compile"] += clock.compile_seconds


def sweep_runs(spec: Path, overrides: Sequence[str], output_dir: Path) -> list[RunPlan]:
    return plan_experiment(spec, [*overrides, f"run.output_dir={output_dir.as_posix()}"], output_dir)


def measure_sweep(runs: list[RunPlan], sweep_dir: Path) -> SweepTiming:
    """Train `runs` (none of them started) with engine.study.sweep.train_sweep, measured, as a fresh
    `engine run` process would: nothing compiled or kept in memory (the persistent cache is left as is)."""
    engine.training.loop.forget_programs()  # and JAX's own caches
    engine.data.synthetic.forget_recent()  # the batches and tasks earlier runs kept
    timing = SweepTiming()
    console = Console(file=open("/dev/null", "w"), force_terminal=False)  # noqa: SIM115
    reset_peak_rss()
    timing.rss_before = rss_bytes()[0]
    started = time.perf_counter()
    with instrumented(timing):
        summary = engine.study.sweep.train_sweep(runs, sweep_dir, console)
    timing.wall_s = time.perf_counter() - started
    timing.peak_rss = rss_bytes()[1]
    if summary.trained != len(runs):
        raise RuntimeError(f"the benchmark sweep trained {summary.trained} of {len(runs)} runs "
                           f"({summary.failed} failed)")
    return timing


# The sweep's passes: (name, overrides). Each starts as a fresh `engine run` process would (nothing
# compiled in memory); the first with an empty persistent compilation cache (a machine's first
# sweep), the others with every program in it.
PASSES = (
    ("first", ()),
    ("second", ()),
    ("every-100", ("run.checkpoint_min_seconds=null",)),  # what a save every 100 steps costs
    ("packed", ("run.pack_size=9",)),  # what vmapped packs give on this device
)


def default_sweep_passes(
    spec: Path, overrides: Sequence[str], workspace: Path | None = None
) -> tuple[list[RunPlan], dict[str, SweepTiming]]:
    """The sweep trained once per entry of PASSES into fresh output directories."""
    workspace = workspace or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    timings = {}
    runs: list[RunPlan] = []
    for name, extra in PASSES:
        runs = sweep_runs(spec, [*overrides, *extra], workspace / name)
        timings[name] = measure_sweep(runs, runs[0].run_dir.parent)
    return runs, timings
