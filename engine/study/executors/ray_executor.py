"""`--executor ray`: one Ray task per run, asking for the run's `parallelism.worker` resources."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from engine.study.executors.worker import WorkerJob, train_one
from spec.parallelism import WorkerResources


def run_on_ray(
    jobs: list[WorkerJob], resources: list[WorkerResources], address: str | None, console: Console
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Submit every job, wait for all; (summaries of the workers that returned, (run id, error)
    of those that raised). Connects to `address` (Ray's rules when None: RAY_ADDRESS, the latest
    cluster started on this machine, else a new local one)."""
    from engine.study.executors import require

    ray = require("ray", "ray")
    ray.init(address=address, log_to_driver=True, configure_logging=False)
    try:
        console.print(f"ray executor: {len(jobs)} runs on a cluster of {ray.cluster_resources().get('CPU', 0):g} CPUs")
        task = ray.remote(max_retries=0)(train_one)
        pending = {
            task.options(num_cpus=need.cpus, num_gpus=need.gpus, name=f"engine-{job.run_id}").remote(job): job.run_id
            for job, need in zip(jobs, resources, strict=True)
        }
        summaries, errors = [], []
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            run_id = pending.pop(ready)
            try:
                summaries.append(ray.get(ready))
                console.print(f"ray executor: run {run_id} finished")
            except Exception as error:  # noqa: BLE001 - a worker's failure is reported, the rest go on
                errors.append((run_id, _cause(error)))
        return summaries, errors
    finally:
        ray.shutdown()


def _cause(error: Exception) -> str:
    """The worker's own exception, without Ray's wrapping traceback."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}"
