"""What one scheduled worker does: plan the sweep again and train exactly one run of it.

The worker takes the same path as `engine run` on this machine (engine.study.sweep.train_sweep on a
one-run selection): it claims the run, resumes it from its checkpoints, writes its status and
appends its row to the sweep's results.jsonl. The driver only waits and then reads results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker on another process or machine needs; paths are absolute."""

    spec: str
    overrides: tuple[str, ...]  # the driver's --set values, then run.output_dir made absolute
    run_id: str
    sweep_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of train_sweep


def train_one(job: WorkerJob) -> Any:
    """Train the run `job.run_id`; returns its engine.study.sweep.SweepSummary (trained, skipped,
    failed, ...). Runs in the worker process: imports JAX there, not in the driver."""
    from rich.console import Console

    from engine.planning.plan import plan_experiment
    from engine.study.sweep import train_sweep
    from engine.training.compile_cache import enable_persistent_compile_cache

    enable_persistent_compile_cache()
    runs = [run for run in plan_experiment(job.spec, list(job.overrides)) if run.run_id == job.run_id]
    if not runs:
        raise UserError(f"{job.spec}: no run {job.run_id} in this spec (was it edited after submission?)")
    console = Console(stderr=True)
    return train_sweep(runs, runs[0].run_dir.parent, console, **job.sweep_options)
