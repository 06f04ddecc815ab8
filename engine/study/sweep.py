"""`engine run`: train every planned run that is not done, then fit the law and write the report.

Runs are independent: each one resumes from its own checkpoints, records its status, and appends
one row to the sweep's results when it finishes. A finished run is never trained again.

Per run, in order (RELIABILITY.md says what each step promises):
1. claim it (engine/study/claims.py): a run held by a live process is skipped, a dead holder's claim
   is taken over; the status is read again under the claim (another process may have finished it);
2. before any run trains, partial runs are checked for spec drift (engine/study/drift.py);
3. train (engine/training/loop.py), alone or in a pack with runs of the same compiled shape
   (`run_packs`); a NaN/inf loss marks the run failed with its step and reason and the sweep
   continues or stops per `run.failure_policy`;
4. append the result (engine/results.py, once per run id), then mark the run done.
A disk error (full, unwritable) stops the sweep with one clear line; the last complete checkpoint
of the run is kept and the same command resumes it.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from io import StringIO
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from ruamel.yaml import YAML

from engine import faults
from engine.errors import UserError
from engine.planning.plan import CHECKPOINT_MANIFEST, RunPlan, read_status
from engine.results import append_result, atomic_write_text, warn, write_status
from engine.study import claims
from engine.study.drift import drift, run_record
from engine.training.build import build_setup
from engine.training.loop import (
    RunDiverged,
    RunOutcome,
    RunPreempted,
    RunSetup,
    pack_capacity,
    programs_key,
    train_pack,
)
from engine.training.parallel import agree


@dataclass
class SweepSummary:
    trained: int = 0
    skipped: int = 0
    failed: int = 0
    busy: int = 0  # held by another live `engine run` process
    stopped_early: bool = False
    preempted: bool = False  # SIGTERM: the current run is checkpointed, the sweep stops
    report_dir: Path | None = None
    failures: list[str] = field(default_factory=list)  # "run <id>: <reason>", for the summary


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
    """<run>/spec.yaml: the resolved spec of this run and its data files' hashes, for the record
    and for drift checks (engine/study/drift.py)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = StringIO()
    yaml.dump(run_record(run), buffer)
    atomic_write_text(run.run_dir / "spec.yaml", buffer.getvalue())


class _QuietInterrupts(logging.Filter):
    """Orbax logs a save that Ctrl-C cut short as an ERROR with the KeyboardInterrupt's traceback;
    the sweep says itself what was kept (record_interrupt), so that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is not None
                    and issubclass(record.exc_info[0], KeyboardInterrupt))


logging.getLogger("absl").addFilter(_QuietInterrupts())


def last_complete_checkpoint(run_dir: Path) -> int | None:
    """The newest checkpoint step whose save completed (its sha256 manifest is written after Orbax
    commits it): what a resume restores, unless its files no longer verify (then the loop says so
    and takes an older one)."""
    directory = run_dir / "checkpoints"
    steps = [int(path.name) for path in directory.iterdir()
             if path.name.isdigit() and (path / CHECKPOINT_MANIFEST).is_file()] if directory.is_dir() else []
    return max(steps, default=None)


def record_interrupt(run: RunPlan, step: int, console: Console) -> None:
    """An interrupted run's status: still resumable (`running`, at the step of the checkpoint a
    resume restores) with the reason "interrupted at step k"; and the same on the terminal."""
    checkpoint = last_complete_checkpoint(run.run_dir)
    write_status(run.run_dir, "running", checkpoint or 0, f"interrupted at step {step}")
    kept = (f"its checkpoint at step {checkpoint} ({run.run_dir / 'checkpoints' / str(checkpoint)}) will be resumed"
            if checkpoint is not None else "it has no complete checkpoint yet and will start again from step 0")
    console.print(f"run {run.run_id} interrupted at step {step}: {kept}", soft_wrap=True)  # paths stay whole


def _progress(console: Console) -> Progress:
    """One line per task. The count and the times keep their width at any terminal width (80
    columns included); the label and the loss text share what is left, cut with an ellipsis."""
    def fixed() -> Column:
        return Column(no_wrap=True)

    def flexible(ratio: int) -> Column:
        return Column(ratio=ratio, no_wrap=True, overflow="ellipsis", min_width=5)

    return Progress(
        TextColumn("{task.description}", table_column=flexible(3)), BarColumn(bar_width=8, table_column=fixed()),
        MofNCompleteColumn(table_column=fixed()), TextColumn("{task.fields[info]}", table_column=flexible(2)),
        TimeElapsedColumn(table_column=fixed()), TextColumn("eta", table_column=fixed()),
        TimeRemainingColumn(table_column=fixed()), console=console, refresh_per_second=4, expand=True,
    )


def disk_error(error: OSError, where: str) -> UserError:
    """One line for a failed disk operation: what, where, and that nothing complete was lost."""
    target = f" {error.filename}" if error.filename else ""
    return UserError(
        f"{where}: disk error{target}: {error.strerror or error}; the last complete checkpoint "
        "and all recorded results are kept (the same `engine run` resumes once this is fixed)"
    )


def write_plan(runs: list[RunPlan], sweep_dir: Path) -> None:
    """<sweep>/plan.json: the whole expanded grid, what `engine plan --json` lists."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / "plan.json", json.dumps([r.to_json() for r in runs], indent=1))
    except OSError as error:
        raise disk_error(error, f"output directory {sweep_dir}") from None


def check_drift(runs: list[RunPlan], allow_drift: bool, console: Console) -> None:
    """Refuse (UserError) when a run about to resume was started from another recipe."""
    refusals = []
    for run in runs:
        if run.status.state not in ("partial", "failed"):
            continue
        lines, note = drift(run)
        if note:
            console.print(f"run {run.run_id}: {note}")
        if not lines:
            continue
        listing = "\n".join(f"  {line}" for line in lines)
        if allow_drift:
            warn(f"run {run.run_id} resumes although its spec drifted (--allow-drift):\n{listing}")
        else:
            refusals.append(f"run {run.run_id} ({run.run_dir}/spec.yaml -> now):\n{listing}")
    if refusals:
        raise UserError(
            "spec drift: these partial runs were started from another recipe; resuming would mix "
            "two trainings. Start them over (delete their directories) or pass --allow-drift:\n"
            + "\n".join(refusals)
        )


class _PoisonedData:
    """Test-only (ENGINE_TEST_NAN_AT, engine/faults.py): the data of `setup` plus a per-example
    `poison` column, NaN at one step, that the wrapped loss multiplies in, so the run diverges
    there (parameters turn NaN too, as in a real divergence)."""

    def __init__(self, data, step: int) -> None:
        self._data, self._step = data, step
        self.examples_per_step, self.units_per_example = data.examples_per_step, data.units_per_example
        self.available_examples, self.fingerprint = data.available_examples, data.fingerprint

    def batch(self, step: int) -> dict:
        value = np.nan if step + 1 == self._step else 0.0
        return {**self._data.batch(step), "poison": np.full(self.examples_per_step, value, np.float32)}

    def eval_batches(self) -> list:
        return self._data.eval_batches()


def _with_injected_nan(setup: RunSetup, run_id: str) -> RunSetup:
    step = faults.nan_step(run_id)
    if step is None:
        return setup
    loss_fn = setup.loss_fn

    def loss(params, batch):
        batch = dict(batch)
        poison = batch.pop("poison")
        return loss_fn(params, batch) * (1.0 + jnp.sum(poison))

    return replace(setup, loss_fn=loss, data=_PoisonedData(setup.data, step))


def train_sweep(
    runs: list[RunPlan], sweep_dir: Path, console: Console, retry_failed: bool = False,
    allow_drift: bool = False,
) -> SweepSummary:
    summary = SweepSummary()
    todo = [r for r in runs if _wanted(r.status.state, retry_failed)]
    summary.skipped = len(runs) - len(todo)
    if summary.skipped:
        console.print(f"{summary.skipped} of {len(runs)} runs already done or failed: skipped")
    check_drift(todo, allow_drift, console)
    labels = {run.run_id: f"run {index + 1}/{len(todo)} {run.run_id} d={run.d_model} S={run.sparsity:g} steps={run.steps}"
              for index, run in enumerate(todo)}
    with _progress(console) as progress:
        sweep_task = progress.add_task("sweep", total=len(todo), info="")
        packs = run_packs(todo)
        for index, pack in enumerate(packs):
            following = packs[index + 1][0][1] if index + 1 < len(packs) else None
            members = []
            for run, setup in pack:
                try:
                    # Multi-host: process 0 claims for the whole cluster; the others follow its word.
                    held = claims.claim(run.run_dir) if is_primary() else None
                except OSError as error:
                    raise disk_error(error, f"run {run.run_id}") from None
                if not agree(held is not None):
                    console.print(f"run {run.run_id}: being trained by "
                                  f"{claims.describe(claims.current_holder(run.run_dir))}; skipped")
                    summary.busy += 1
                    progress.advance(sweep_task)
                    continue
                member = _start(run, setup, held, labels[run.run_id], progress, console, summary, retry_failed)
                if member is None:
                    progress.advance(sweep_task)
                else:
                    members.append(member)
            try:
                stop = _train_members(members, progress, console, summary, following)
            finally:
                for member in members:
                    if member.held is not None:
                        claims.release(member.held)
            progress.advance(sweep_task, len(members))
            if stop:
                break
    for failure in summary.failures:
        console.print(f"[red]failed[/red] {failure}")
    return summary


def run_packs(runs: list[RunPlan]) -> list[list[tuple[RunPlan, RunSetup]]]:
    """The runs grouped into packs (engine/training/loop.py train_pack), in sweep order of each
    pack's first run: runs that share compiled programs and batch shape, at most `run.pack_size`
    of them, or as many as `pack_capacity` lets one device hold. Every setup is built here, so a
    spec problem of a later run stops the sweep before anything trains."""
    setups = [(run, _with_injected_nan(build_setup(run), run.run_id)) for run in runs]
    if jax.process_count() > 1:  # every process must take the same runs in the same order: alone
        return [[pair] for pair in setups]
    groups: dict[tuple[Any, ...], list[tuple[RunPlan, RunSetup]]] = {}
    for run, setup in setups:
        key = (programs_key(setup), setup.data.examples_per_step, type(setup.data).__name__)
        groups.setdefault(key, []).append((run, setup))
    packs: list[list[tuple[RunPlan, RunSetup]]] = []
    for group in groups.values():
        run, setup = group[0]
        size = run.spec.run.pack_size or pack_capacity(setup)
        packs.extend(group[start:start + size] for start in range(0, len(group), size))
    return packs


@dataclass
class _Member:
    """A claimed run about to train in a pack, with what its record needs."""

    run: RunPlan
    setup: RunSetup
    held: claims.Claim | None  # None on the processes of a multi-host run other than 0
    task: TaskID
    reached: int  # the last step reported, for an interruption's record

    @property
    def primary(self) -> bool:
        return self.held is not None


def _start(
    run: RunPlan, setup: RunSetup, held: claims.Claim | None, label: str, progress: Progress, console: Console,
    summary: SweepSummary, retry_failed: bool,
) -> _Member | None:
    """A claimed run ready to train (its record and status written), or None when another
    process finished it meanwhile."""
    status = read_status(run.run_dir)  # under the claim: another process may have finished it
    if not agree(_wanted(status.state, retry_failed)):
        console.print(f"run {run.run_id}: {status.describe()} meanwhile (another process); skipped")
        summary.skipped += 1
        if held is not None:
            claims.release(held)
        return None
    if held is not None:
        claims.record_attempt(held, status.step)
    if status.state == "partial":
        resume_from = last_complete_checkpoint(run.run_dir)
        console.print(f"resuming run {run.run_id} from step {resume_from}" if resume_from is not None
                      else f"run {run.run_id} was started before but has no complete checkpoint: starting from step 0")
    try:
        if held is not None:
            write_run_spec(run)
            write_status(run.run_dir, "running", status.step or 0)  # a resumed run keeps its step
    except OSError as error:
        raise disk_error(error, f"run {run.run_id}") from None
    return _Member(run, setup, held, progress.add_task(label, total=run.steps, info=""), status.step or 0)


def _train_members(
    members: list[_Member], progress: Progress, console: Console, summary: SweepSummary, following: RunSetup | None,
) -> bool:
    """Train a pack's members and record each one's outcome; True when the sweep must stop.
    `following`: the next pack's first setup, whose programs compile meanwhile."""
    if not members:
        return False
    started = time.perf_counter()

    def reporter(member: _Member) -> Callable[[int, float], None]:
        def on_progress(step: int, loss: float) -> None:
            member.reached = step
            rate = step / max(time.perf_counter() - started, 1e-9)
            progress.update(member.task, completed=step, info=f"loss {loss:.4f} {rate:.0f} step/s")
        return on_progress

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            outcomes = train_pack([(m.setup, m.run.run_dir, reporter(m)) for m in members], following)
    except KeyboardInterrupt:  # Ctrl-C: say what is kept, then let the command stop
        for member in members:
            if member.primary:
                record_interrupt(member.run, member.reached, console)
        raise
    except OSError as error:
        raise disk_error(error, ", ".join(f"run {m.run.run_id}" for m in members)) from None
    stop = False
    for member, outcome in zip(members, outcomes, strict=True):
        stop = _record(member, outcome, progress, console, summary) or stop
    return stop


def _record(
    member: _Member, outcome: RunOutcome | RunDiverged | RunPreempted, progress: Progress, console: Console,
    summary: SweepSummary,
) -> bool:
    """One member's outcome in its status, the results and the summary; True when the sweep must stop."""
    run = member.run
    if isinstance(outcome, RunPreempted):
        console.print(f"run {run.run_id}: {outcome}; `engine run` again resumes it")
        summary.preempted = True
        return True
    if isinstance(outcome, RunDiverged):
        if member.primary:
            write_status(run.run_dir, "failed", outcome.step, str(outcome))
        summary.failed += 1
        summary.failures.append(f"run {run.run_id} at step {outcome.step}: {outcome}")
        console.print(f"[red]run {run.run_id} failed[/red]: {outcome}")
        progress.remove_task(member.task)
        if run.spec.run.failure_policy == "fail_fast":
            summary.stopped_early = True
            return True
        return False
    progress.remove_task(member.task)
    if member.held is not None and member.held.lost:
        warn(f"run {run.run_id}: another process took over its claim while it trained; "
             "its result is left to that process")
        return False
    try:
        if member.primary:
            append_result(run.run_dir.parent, result_row(run, outcome.final_eval_loss, outcome.wall_s))
            write_status(run.run_dir, "done", run.steps, None, eval_loss=outcome.final_eval_loss)
    except OSError as error:
        raise disk_error(error, f"run {run.run_id}") from None
    progress.update(progress.task_ids[0], info=f"last {run.run_id}: loss {outcome.final_eval_loss:.4f}")
    summary.trained += 1
    return False


def is_primary() -> bool:
    """Process 0 of a multi-host run (or the only process): the one that claims and writes."""
    return jax.process_index() == 0


def _wanted(state: str, retry_failed: bool) -> bool:
    return state != "done" and (retry_failed or state != "failed")
