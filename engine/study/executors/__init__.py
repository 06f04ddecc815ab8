"""Where a sweep's runs train: `engine run --executor local|ray|slurm`.

    local   one after another in this process (the default)
    ray     one Ray task per run, with the run's `parallelism.worker` resources, on the cluster at
            --ray-address (or RAY_ADDRESS, or a local one started here)
    slurm   one SLURM job array through submitit, one array task per run (submitit's local
            executor where there is no SLURM)

The scheduler does the placing. Each worker trains exactly one run through the same code as
`local` (engine/study/executors/worker.py), so claims, resume, statuses and results.jsonl work as they
do for several `engine run` processes on one machine; the driver waits for every worker, then
fits and reports from results.jsonl. Ray and submitit are optional extras, imported only here.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

from engine.errors import UserError
from engine.planning.plan import RunPlan
from engine.study.executors.worker import WorkerJob

EXECUTORS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class ExecutorOptions:
    """Scheduler settings from the command line."""

    ray_address: str | None = None  # None: RAY_ADDRESS, the latest local cluster, or a new one
    slurm_options: dict[str, Any] = field(default_factory=dict)  # submitit update_parameters(...)


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"--executor {extra} needs {module}, which is not installed: "
            f"pip install 'sparse-scaling-engine[{extra}]'"
        ) from None


def worker_jobs(spec: Path, overrides: list[str], runs: list[RunPlan],
                sweep_options: dict[str, Any]) -> list[WorkerJob]:
    """One job per run. Workers may start in another directory: the spec path and the output
    directory are made absolute (neither is part of a run id)."""
    output_dir = Path(runs[0].spec.run.output_dir).absolute() if runs else Path.cwd()
    pinned = (*overrides, f"run.output_dir={output_dir}")
    return [WorkerJob(str(spec.absolute()), pinned, run.run_id, dict(sweep_options)) for run in runs]


def merge_summaries(summaries: list[Any], into: Any) -> Any:
    """Add the workers' sweep summaries up: counts summed, flags or'ed, lists joined."""
    for summary in summaries:
        for item in dataclasses.fields(summary):
            mine, theirs = getattr(into, item.name), getattr(summary, item.name)
            if isinstance(theirs, bool):
                setattr(into, item.name, bool(mine) or theirs)
            elif isinstance(theirs, int):
                setattr(into, item.name, mine + theirs)
            elif isinstance(theirs, list):
                mine.extend(theirs)
    return into


def execute(
    executor: str, runs: list[RunPlan], spec: Path, overrides: list[str], console: Console,
    sweep_options: dict[str, Any], options: ExecutorOptions = ExecutorOptions(),
) -> Any:
    """Train `runs` with the chosen executor; returns the merged engine.study.sweep.SweepSummary."""
    from engine.study.sweep import SweepSummary, train_sweep

    if executor == "local":
        check_layouts(runs)
        sweep_dir = runs[0].run_dir.parent
        return train_sweep(runs, sweep_dir, console, **sweep_options)
    if executor in ("ray", "slurm") and any(run.spec.run.failure_policy == "fail_fast" for run in runs):
        # Every run is submitted at once, so there is no later run to hold back after a failure.
        raise UserError(f"run.failure_policy: fail_fast stops a sweep that trains its runs one after another "
                        f"(--executor local); --executor {executor} starts them all at once. Use "
                        "--set run.failure_policy=continue, or the local executor")
    jobs = worker_jobs(spec, overrides, runs, sweep_options)
    resources = [run.spec.parallelism.worker for run in runs]
    if executor == "ray":
        from engine.study.executors.ray_executor import run_on_ray

        summaries, errors = run_on_ray(jobs, resources, options.ray_address, console)
    elif executor == "slurm":
        from engine.study.executors.slurm_executor import run_on_slurm

        summaries, errors = run_on_slurm(jobs, resources, runs[0].run_dir.parent, options.slurm_options, console)
    else:
        raise UserError(f"--executor {executor}: expected one of {', '.join(EXECUTORS)}", exit_code=2)
    summary = merge_summaries(summaries, SweepSummary())
    for run_id, error in errors:
        console.print(f"[red]run {run_id}: the worker failed[/red]: {error}")
    summary.failed += len(errors)
    _rebuild_results_csv(runs[0].run_dir.parent)
    return summary


def check_layouts(runs: list[RunPlan]) -> None:
    """Sharded runs' meshes and rules fit this machine's devices and the models' shapes: one
    clear error before any run is claimed or trained. (Remote workers check their own devices.)"""
    from engine.models import abstract_params
    from engine.training.parallel import build_layout
    from spec.parallelism import ParallelismSpec

    default = ParallelismSpec()
    for run in runs:
        parallelism = run.spec.parallelism
        if parallelism.mesh == default.mesh and not parallelism.rules:
            continue  # one device, nothing split: nothing can fail to fit
        params = abstract_params(run.dims)
        build_layout(parallelism, params, run.batch_size, f"run {run.run_id} ({run.experiment})")


def _rebuild_results_csv(sweep_dir: Path) -> None:
    """results.jsonl is the record (appended by each worker); the CSV is rewritten from it once
    all workers are done, so concurrent workers cannot leave it behind the JSON lines."""
    from engine.results import write_results_csv

    if (sweep_dir / "results.jsonl").is_file():
        write_results_csv(sweep_dir)
