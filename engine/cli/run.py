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
from engine.study.executors import EXECUTORS, ExecutorOptions, execute, select_run_ids
from engine.planning.plan import RunPlan, plan_experiment

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
    parser.add_argument(
        "--allow-drift", action="store_true",
        help="resume partial runs even when their stored spec.yaml or data files differ from now "
             "(default: refuse with the differences, see RELIABILITY.md)",
    )
    parser.add_argument(
        "--with-deps", action="store_true",
        help="first run the specs this one needs (pretrained sources, the fits its analyses use); "
             "without it, a missing dependency stops the command with what to run",
    )
    parser.add_argument(
        "--run-id", dest="run_ids", action="append", default=[], metavar="ID",
        help="train only this run (an id from `engine plan`; repeatable)",
    )
    parser.add_argument(
        "--executor", choices=EXECUTORS, default="local",
        help="where runs train: local (here, one after another), ray (one Ray task per run), "
             "slurm (a SLURM job array through submitit); see README 'Scaling out'",
    )
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="Ray cluster to use with --executor ray (default: RAY_ADDRESS, else a local one)")
    parser.add_argument(
        "--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY=VALUE",
        help="submitit parameter for --executor slurm, e.g. slurm_partition=gpu (repeatable)",
    )
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
    from engine.training.compile_cache import enable_persistent_compile_cache
    from engine.training.parallel import initialize_distributed

    initialize_distributed()  # a multi-host run joins its cluster before any other JAX call
    enable_persistent_compile_cache()  # runs of the same shapes reuse compiled steps
    console = Console(stderr=True)
    return run_spec(args.spec, args, console, overrides=args.overrides, only=args.only)


def run_spec(
    path: Path, args: argparse.Namespace, console: Console, overrides: list[str], only: list[str],
    chain: tuple[Path, ...] = (),
) -> int:
    """Train what `path` lacks, then fit and report. Dependencies (other specs this one's runs or
    analyses need) are trained first with --with-deps, else named in a clear stop."""
    from engine.study.analysis import analyse
    from engine.study.sweep import is_primary, write_plan

    runs = plan_experiment(path, overrides)
    selected = select_runs(runs, only)
    code = ensure_dependencies(path, selected, args, console, chain)
    if code != 0:
        return code  # a dependency failed or was preempted: its exit code (75 resumes)
    runs = plan_experiment(path, overrides)  # sources may have been trained just now
    selected = select_runs(runs, only)
    run_ids = args.run_ids if not chain else []  # --run-id names runs of the spec on the command line
    selected = select_run_ids(selected, run_ids)
    check_pretrained_sources(selected)  # before anything of this sweep is written
    sweep_dir = runs[0].run_dir.parent
    if is_primary():  # multi-host: process 0 writes what the sweep shares
        write_plan(runs, sweep_dir)
    summary = execute(args.executor, selected, path, overrides, console,
                      {"retry_failed": args.retry_failed, "allow_drift": args.allow_drift},
                      ExecutorOptions(args.ray_address, slurm_options(args.slurm_options)))
    console.print(f"{runs[0].experiment}: trained {summary.trained}, skipped {summary.skipped}, "
                  f"failed {summary.failed}")
    if summary.preempted:
        return EXIT_RESUMABLE
    if summary.stopped_early:
        console.print("stopped at the first failure (run.failure_policy: fail_fast)")
        return 1
    if not is_primary():
        return 1 if summary.failed else 0  # process 0 fits and reports
    if summary.busy:  # other processes are still training some runs: they fit when done
        console.print(f"fit and report skipped: {summary.busy} runs are being trained by other processes")
    elif not args.no_report:
        try:
            report_dir = analyse(runs, sweep_dir, console)
        except UserError as error:
            if not only and not run_ids:
                raise
            # A partial selection may not have enough finished runs for the law yet.
            console.print(f"fit and report skipped: {error}")
            report_dir = None
        if report_dir is not None:
            console.print(f"report: {report_dir / 'index.html'}")
    return 1 if summary.failed else 0


def slurm_options(pairs: list[str]) -> dict[str, object]:
    """--slurm-option KEY=VALUE pairs, values read as YAML scalars (60 is a number)."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm-option {pair}: expected KEY=VALUE", exit_code=2)
        options[key] = YAML(typ="safe").load(raw)
    return options


def ensure_dependencies(
    path: Path, runs: list[RunPlan], args: argparse.Namespace, console: Console, chain: tuple[Path, ...]
) -> int:
    """Every spec `runs` need has what they need: trained now (--with-deps) or a UserError saying
    which command to run. Returns 0, or the exit code of a dependency's run that did not finish."""
    from engine.planning.dependencies import dependencies_of

    unmet = [(dep, problem) for dep in dependencies_of(runs, analysis=not args.no_report)
             if (problem := dep.unmet()) is not None]
    if not unmet:
        return 0
    if not args.with_deps:
        lines = "\n".join(f"  {dep.spec} ({dep.why}): {problem}" for dep, problem in unmet)
        commands = "\n".join(f"  engine run {spec}" for spec in dict.fromkeys(d.spec for d, _ in unmet))
        raise UserError(f"{path} needs other specs' results first:\n{lines}\nrun first:\n{commands}\n"
                        f"or let this command train them: engine run {path} --with-deps")
    for dep in dict.fromkeys(d.spec for d, _ in unmet):
        if dep.resolve() in chain:
            raise UserError(f"{path}: specs depend on each other ({' -> '.join(p.name for p in (*chain, dep))})")
        console.print(f"[bold]{path} needs {dep}: running it first[/bold]")
        code = run_spec(dep, args, console, overrides=[], only=[], chain=(*chain, path.resolve()))
        if code == EXIT_RESUMABLE:
            return code  # preempted: the same command resumes the dependency, then this spec
    still = [(d, problem) for d, _ in unmet if (problem := d.unmet()) is not None]
    if still:  # a failed run this spec does not need is no reason to stop; one it needs is
        lines = "\n".join(f"  {d.spec} ({d.why}): {problem}" for d, problem in still)
        console.print(f"[red]{path} not started: its dependencies are still not met[/red]\n{lines}")
        return 1
    return 0


def check_pretrained_sources(runs: list[RunPlan]) -> None:
    """Each pretrained run's source checkpoint exists, is whole and fits the model: one clear error
    before anything is written, rather than a failure halfway through the sweep."""
    from engine.models import abstract_params
    from engine.training.pretrained import check_run_sources

    check_run_sources(runs, lambda run: abstract_params(run.dims))
