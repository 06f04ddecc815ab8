"""After training: fit the law to a sweep's results and write its report, per the spec's
`analysis:` section."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from engine.errors import UserError
from engine.plan import RunPlan
from engine.results import read_results
from spec.analysis import LargestNonzerosHoldout, NoHoldout


def analyse(runs: list[RunPlan], sweep_dir: Path, console: Console) -> Path | None:
    """Fit the law to the sweep's results and write the report, per the spec's analysis section."""
    from engine.fit import FitSettings, fit_law, read_results as read_table
    from engine.report import write_report

    analysis = runs[0].spec.analysis
    if analysis.fit is None:
        return None
    rows = read_results(sweep_dir)
    if not rows:
        console.print("no finished runs: nothing to fit")
        return None
    settings = analysis.fit
    holdout = _holdout_expression(settings.holdout, rows, runs)
    fit_settings = FitSettings(huber_delta=settings.huber_delta, log_loss=settings.log_loss,
                               starts=settings.starts, seed=settings.seed,
                               bootstrap=settings.bootstrap, holdout=holdout)
    table = read_table(sweep_dir / "results.csv")
    result = fit_law(table, fit_settings)
    report_dir = sweep_dir / "report"
    write_report(report_dir, result, table)
    return report_dir


def _holdout_expression(holdout, rows: list[dict], runs: list[RunPlan]) -> str:
    """The spec's holdout as `engine fit --holdout` reads it. Exact non-zero counts differ a little
    between sparsities of one size target, so 'largest' means the largest *target*."""
    if holdout is None or isinstance(holdout, NoHoldout):
        return "none"
    if isinstance(holdout, LargestNonzerosHoldout):
        largest = max(r.coordinates.get("model.nonzeros", r.nonzeros) for r in runs)
        held = {r.run_id for r in runs if r.coordinates.get("model.nonzeros", r.nonzeros) == largest}
        counts = [row["nonzeros"] for row in rows if row["run_id"] in held]
        kept = [row["nonzeros"] for row in rows if row["run_id"] not in held]
        if not counts or not kept or min(counts) <= max(kept):
            return "none"  # nothing separable to hold out
        return f"nonzeros>={min(counts)}"
    raise UserError("analysis.fit.holdout: kind 'runs' is not supported by `engine run` yet; "
                    "use largest_nonzeros or none, or `engine fit --holdout`")
