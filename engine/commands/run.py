"""`engine run SPEC [--only FIELD=VALUE ...] [--set PATH=VALUE ...] [--retry-failed]`.

Trains every run of the spec that is not done (resuming partial ones from their last complete
checkpoint, skipping finished ones), then fits the law to the sweep's results and writes the
report into <output_dir>/<name>/report/. On SIGTERM (a preemption notice) the current run saves
a checkpoint at once and the command exits with code 75: run it again to resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from ruamel.yaml import YAML

from engine.errors import UserError
from engine.plan import RunPlan, plan_experiment

EXIT_RESUMABLE = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; run the same command again


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="train what is missing, resume what was cut, then fit and report",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("spec", type=Path, metavar="SPEC", help="experiment spec file")
    parser.add_argument(
        "--only", action="append", default=[], metavar="FIELD=VALUE",
        help="train only the runs whose sweep coordinate FIELD equals VALUE, e.g. "
             "--only sparsity.level=0.5 (repeatable; all must match)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field before validation, e.g. --set data.batch_size=16 (repeatable)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    parser.add_argument("--no-report", action="store_true", help="train only; skip the fit and report")
    parser.set_defaults(handler=run)


def select_runs(runs: list[RunPlan], only: list[str]) -> list[RunPlan]:
    """The runs whose coordinates match every FIELD=VALUE (values read as YAML scalars)."""
    selected = runs
    for condition in only:
        field, sep, raw = condition.partition("=")
        if not sep or not field:
            raise UserError(f"--only {condition}: expected FIELD=VALUE", exit_code=2)
        if not any(field in run.coordinates for run in runs):
            axes = ", ".join(sorted({axis for run in runs for axis in run.coordinates})) or "none"
            raise UserError(f"--only {condition}: {field} is not a sweep axis (axes: {axes})", exit_code=2)
        value = YAML(typ="safe").load(raw)
        selected = [run for run in selected if run.coordinates.get(field) == value]
    if not selected:
        raise UserError(f"--only {' '.join(only)}: no run matches", exit_code=2)
    return selected


def run(args: argparse.Namespace) -> int:
    from engine.compile_cache import enable_persistent_compile_cache
    from engine.analysis import analyse
    from engine.sweep import train_sweep, write_plan

    runs = plan_experiment(args.spec, args.overrides)
    selected = select_runs(runs, args.only)
    enable_persistent_compile_cache()  # runs of the same shapes reuse compiled steps
    console = Console(stderr=True)
    sweep_dir = runs[0].run_dir.parent
    write_plan(runs, sweep_dir)
    summary = train_sweep(selected, sweep_dir, console, retry_failed=args.retry_failed)
    console.print(f"trained {summary.trained}, skipped {summary.skipped}, failed {summary.failed}")
    if summary.preempted:
        return EXIT_RESUMABLE
    if summary.stopped_early:
        console.print("stopped at the first failure (run.failure_policy: fail_fast)")
        return 1
    if not args.no_report:
        try:
            report_dir = analyse(runs, sweep_dir, console)
        except UserError as error:
            if not args.only:
                raise
            # A partial selection may not have enough finished runs for the law yet.
            console.print(f"fit and report skipped: {error}")
            report_dir = None
        if report_dir is not None:
            console.print(f"report: {report_dir / 'index.html'}")
    return 1 if summary.failed else 0
