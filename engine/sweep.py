"""`engine run`: train every planned run that is not done, then fit the law and write the report.

Runs are independent: each one resumes from its own checkpoints, records its status, and appends
one row to the sweep's results when it finishes. A finished run is never trained again.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from io import StringIO
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from ruamel.yaml import YAML

from engine.build import build_setup
from engine.plan import RunPlan
from engine.results import append_result, atomic_write_text, write_status
from engine.train import RunDiverged, RunPreempted, train_run


@dataclass
class SweepSummary:
    trained: int = 0
    skipped: int = 0
    failed: int = 0
    stopped_early: bool = False
    preempted: bool = False  # SIGTERM: the current run is checkpointed, the sweep stops
    report_dir: Path | None = None


def result_row(run: RunPlan, loss: float, wall_s: float) -> dict:
    """One line of results.jsonl: the canonical columns, then what the engine adds."""
    return {
        "sparsity": run.sparsity, "nonzeros": run.nonzeros, "data": run.data, "loss": loss,
        "run_id": run.run_id, "family": run.family, "pattern": run.pattern,
        "dense_params": run.dense_params, "d_model": run.d_model, "steps": run.steps,
        "batch_size": run.batch_size, "flops_dense": run.flops_dense,
        "flops_sparse": run.flops_sparse, "init": run.init, "wall_s": round(wall_s, 3),
        "coordinates": run.coordinates,
        # Pruned pretrained runs: the source and its training data (Table 4's pretraining cost).
        "source_run_id": run.source.run_id if run.source else None,
        "pretrain_data": run.source.data if run.source else None,
    }


def write_run_spec(run: RunPlan) -> None:
    """<run>/spec.yaml: the resolved spec of this run, for the record and for drift checks."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    yaml.default_flow_style = False
    document = {"run_id": run.run_id, "coordinates": run.coordinates, "dims": asdict(run.dims),
                "spec": run.spec.model_dump(mode="json", exclude={"sweep"})}
    buffer = StringIO()
    yaml.dump(document, buffer)
    atomic_write_text(run.run_dir / "spec.yaml", buffer.getvalue())


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), console=console, refresh_per_second=4,
    )


def write_plan(runs: list[RunPlan], sweep_dir: Path) -> None:
    """<sweep>/plan.json: the whole expanded grid, what `engine plan --json` lists."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "plan.json", json.dumps([r.to_json() for r in runs], indent=1))


def train_sweep(
    runs: list[RunPlan], sweep_dir: Path, console: Console, retry_failed: bool = False
) -> SweepSummary:
    summary = SweepSummary()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if r.status.state != "done" and (retry_failed or r.status.state != "failed")]
    summary.skipped = len(runs) - len(todo)
    if summary.skipped:
        console.print(f"{summary.skipped} of {len(runs)} runs already done or failed: skipped")
    failure_policy = runs[0].spec.run.failure_policy if runs else "continue"
    with _progress(console) as progress:
        sweep_task = progress.add_task("sweep", total=len(todo), info="")
        for index, run in enumerate(todo):
            label = (f"run {index + 1}/{len(todo)} {run.run_id} d={run.d_model} "
                     f"S={run.sparsity:g} steps={run.steps}")
            run_task = progress.add_task(label, total=run.steps, info="")
            started = time.perf_counter()

            def on_progress(step: int, loss: float, _task=run_task, _start=started) -> None:
                rate = step / max(time.perf_counter() - _start, 1e-9)
                progress.update(_task, completed=step, info=f"loss {loss:.4f} {rate:.0f} step/s")

            setup = build_setup(run)
            write_run_spec(run)
            write_status(run.run_dir, "running", run.status.step or 0)  # a resumed run keeps its step
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    outcome = train_run(setup, run.run_dir, on_progress)
            except RunPreempted as preempted:
                console.print(f"run {run.run_id}: {preempted}; `engine run` again resumes it")
                summary.preempted = True
                break
            except RunDiverged as diverged:
                write_status(run.run_dir, "failed", diverged.step, str(diverged))
                console.print(f"[red]run {run.run_id} failed[/red]: {diverged}")
                summary.failed += 1
                progress.remove_task(run_task)
                if failure_policy == "fail_fast":
                    summary.stopped_early = True
                    break
                progress.advance(sweep_task)
                continue
            append_result(run.run_dir.parent, result_row(run, outcome.final_eval_loss, outcome.wall_s))
            write_status(run.run_dir, "done", run.steps, None, eval_loss=outcome.final_eval_loss)
            progress.remove_task(run_task)
            progress.advance(sweep_task)
            progress.update(sweep_task, info=f"last {run.run_id}: loss {outcome.final_eval_loss:.4f}")
            summary.trained += 1
    return summary
