"""An adaptive study (`analysis.design`): train the initial runs, then fit -> suggest -> train in
rounds over the sweep's grid, until the target is pinned, the rounds are done or the budget spent.

Each round is recorded in <sweep>/design.jsonl before its runs train (round, proposed run ids,
the target's bootstrap sd and interval at that fit, FLOPs spent), so an interrupted study resumes
the same rounds: recorded runs are trained again if unfinished, never re-chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from engine.errors import UserError
from engine.fit.design import Candidate, Target, parse_target, suggest_runs
from engine.fit.io import ResultsTable
from engine.fit.law import LawCoefficients
from engine.fit.result import FitResult
from engine.planning.plan import RunPlan
from engine.results import atomic_write_text
from spec.analysis import DesignSettings

DESIGN_FILE = "design.jsonl"


@dataclass(frozen=True)
class Round:
    round: int
    run_ids: list[str]
    target_sd: float  # bootstrap sd of the target at the fit that chose this round
    target_interval: list[float] | None
    flops_spent: float  # by the rounds so far, this one included


def initial_runs(runs: list[RunPlan], design: DesignSettings) -> list[RunPlan]:
    """The runs whose coordinates lie in `design.initial` (every listed axis, any listed value)."""
    axes = {axis for run in runs for axis in run.coordinates}
    for axis, values in design.initial.items():
        if axis not in axes:
            raise UserError(f"analysis.design.initial: {axis} is not a sweep axis (axes: {', '.join(sorted(axes))})")
        present = {json.dumps(run.coordinates[axis], sort_keys=True) for run in runs}
        missing = [v for v in values if json.dumps(v, sort_keys=True) not in present]
        if missing:
            raise UserError(f"analysis.design.initial.{axis}: {missing} not among the sweep's values")
    chosen = [run for run in runs if all(run.coordinates[axis] in values for axis, values in design.initial.items())]
    if not chosen:
        raise UserError("analysis.design.initial selects no run")
    return chosen


def read_rounds(sweep_dir: Path) -> list[Round]:
    path = sweep_dir / DESIGN_FILE
    if not path.is_file():
        return []
    return [Round(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def record_round(sweep_dir: Path, rounds: list[Round]) -> None:
    atomic_write_text(sweep_dir / DESIGN_FILE, "".join(json.dumps(vars(r)) + "\n" for r in rounds))


def target_spread(fit: FitResult, target: Target, k: float) -> tuple[float, list[float] | None]:
    """The target's bootstrap standard deviation and 95% interval at this fit (`all`: the
    coefficients' root-mean-square sd of their logs, about their mean relative sd)."""
    samples = fit.bootstrap_samples
    if samples is None:
        raise UserError("analysis.design needs bootstrap intervals: set analysis.fit.bootstrap above 0")
    if target.kind == "all":
        free = [i for i, name in enumerate(LawCoefficients.__dataclass_fields__) if name in fit.settings.free_coefficients()]
        with np.errstate(all="ignore"):
            logs = np.log(samples[:, free])
        logs = logs[np.all(np.isfinite(logs), axis=1)]
        return float(np.sqrt(np.mean(np.var(logs, axis=0)))), None
    with np.errstate(all="ignore"):
        values = np.array([target.value(LawCoefficients.from_array(row), k) for row in samples])
    values = values[np.isfinite(values)]
    return float(np.std(values)), [float(v) for v in np.percentile(values, (2.5, 97.5))]


def next_round(fit: FitResult, table: ResultsTable, runs: list[RunPlan], design: DesignSettings,
               rounds: list[Round], budget: float, k: float, console: Console) -> Round | None:
    """The next round's runs, or None when the study is done (target pinned, rounds done, budget
    spent, or nothing left that fits)."""
    target = parse_target(design.target)
    sd, interval = target_spread(fit, target, k)
    shown = f"{design.target}: sd {sd:.4g}" + (f", 95% [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "")
    spent = rounds[-1].flops_spent if rounds else 0.0
    if design.stop_sd is not None and sd < design.stop_sd:
        console.print(f"adaptive design: {shown} is below stop_sd {design.stop_sd:g}: done")
        return None
    if len(rounds) >= design.rounds:
        console.print(f"adaptive design: {shown} after {len(rounds)} rounds: done")
        return None
    candidates = [Candidate(run.sparsity, float(run.nonzeros), float(run.data), float(run.flops_dense),
                            dict(run.coordinates), run.run_id)
                  for run in runs if run.init == "scratch" and run.status.state != "done"]
    proposal = suggest_runs(fit, table, candidates, target, budget - spent, k, design.batch)
    if not proposal.proposals:
        console.print(f"adaptive design: {shown}; no candidate fits the remaining budget: done")
        return None
    chosen = Round(round=len(rounds) + 1, run_ids=[str(p.candidate.run_id) for p in proposal.proposals],
                   target_sd=sd, target_interval=interval, flops_spent=spent + proposal.spent)
    console.print(f"adaptive design round {chosen.round}: {shown}; training {len(chosen.run_ids)} runs "
                  f"(predicted sd after: {proposal.proposals[-1].target_sd_after:.4g})")
    return chosen


def design_summary(rounds: list[Round], final_sd: float, final_interval: list[float] | None,
                   initial_flops: float, grid_flops: float, target: str) -> dict[str, Any]:
    """What the report shows: the target per round and the compute, beside the whole grid's."""
    spent = initial_flops + (rounds[-1].flops_spent if rounds else 0.0)
    return {
        "target": target,
        "rounds": [vars(r) for r in rounds],
        "final_sd": final_sd, "final_interval": final_interval,
        "flops_spent": spent, "grid_flops": grid_flops, "share_of_grid": spent / grid_flops,
    }
