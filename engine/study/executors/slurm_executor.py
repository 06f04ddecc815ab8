"""`--executor slurm`: one SLURM job array through submitit, one array task per run.

Where there is no SLURM (no `srun` on the PATH), submitit's AutoExecutor picks its local executor,
which runs each task as a process on this machine; the chosen cluster is printed. Extra sbatch
settings come from `--slurm-option KEY=VALUE` (submitit's update_parameters names, e.g.
slurm_partition=gpu, mem_gb=32, slurm_account=...); `cluster=local` forces the local executor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from engine.errors import UserError
from engine.study.executors.worker import WorkerJob, train_one
from spec.parallelism import WorkerResources


def job_parameters(resources: list[WorkerResources], count: int, experiment: str) -> dict[str, Any]:
    """submitit parameters of the array: one array task asks for the most any run asks for."""
    return {
        "name": f"engine-{experiment}",
        "timeout_min": max(need.timeout_min for need in resources),
        "cpus_per_task": max(need.cpus for need in resources),
        "gpus_per_node": max(need.gpus for need in resources),
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_array_parallelism": count,
    }


def run_on_slurm(
    jobs: list[WorkerJob], resources: list[WorkerResources], sweep_dir: Path,
    options: dict[str, Any], console: Console,
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Submit the array, wait for every task; (summaries, (run id, error) of failed tasks)."""
    from engine.study.executors import require

    submitit = require("submitit", "slurm")
    options = dict(options)
    cluster = options.pop("cluster", None)
    logs = sweep_dir.absolute() / "submitit" / "%j"
    try:
        executor = submitit.AutoExecutor(folder=logs, cluster=cluster)
        executor.update_parameters(**(job_parameters(resources, len(jobs), sweep_dir.name) | options))
    except (ValueError, NameError, AssertionError, RuntimeError) as error:
        raise UserError(f"--executor slurm: {error}") from None
    submitted = executor.map_array(train_one, jobs)
    console.print(f"slurm executor: {len(submitted)} array tasks on submitit cluster '{executor.cluster}', "
                  f"logs in {logs.parent}")
    run_of = {job.job_id: spec.run_id for job, spec in zip(submitted, jobs, strict=True)}
    summaries, errors = [], []
    for job in submitit.helpers.as_completed(submitted, poll_frequency=1):
        run_id = run_of[job.job_id]
        try:
            summaries.append(job.result())
            console.print(f"slurm executor: run {run_id} finished (task {job.job_id})")
        except Exception as error:  # noqa: BLE001 - a task's failure is reported, the rest go on
            errors.append((run_id, _last_line(error)))
    return summaries, errors


def _last_line(error: Exception) -> str:
    """submitit's error carries the task's whole traceback; its last line names the cause."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
