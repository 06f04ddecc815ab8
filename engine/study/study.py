"""A `Study`: everything `engine run SPEC` does, in pipeline order.

    study = Study(Path("experiments/vit_sweep.yaml"), StudyOptions(), console)
    exit_code = study.run()      # plan -> dependencies -> train (through an executor) -> analyse

The CLI only turns arguments into `StudyOptions` and prints; everything else happens here, once:
1. plan: the spec's runs (engine/planning/), narrowed by --only and --run-id;
2. dependencies: other specs this one needs (pretrained sources, fits its analyses use) are
   trained first as studies of their own (--with-deps), or named in a clear stop;
3. train: the selected runs through an executor (engine/study/executors/: local, ray, slurm);
4. analyse: fit the law and write the report per the spec's `analysis:` (engine/study/analysis.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from ruamel.yaml import YAML

from engine.errors import UserError
from engine.planning.plan import RunPlan, plan_experiment

EXIT_RESUMABLE = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; run the same command again


@dataclass(frozen=True)
class StudyOptions:
    """What `engine run` was asked to do, beyond the spec itself."""

    overrides: tuple[str, ...] = ()  # --set PATH=VALUE, applied before validation
    only: tuple[str, ...] = ()  # --only FIELD=VALUE: train the matching sweep points
    run_ids: tuple[str, ...] = ()  # --run-id: train exactly these runs
    retry_failed: bool = False
    allow_drift: bool = False
    report: bool = True  # fit and report after training
    with_deps: bool = False  # train the specs this one needs first
    executor: str = "local"
    ray_address: str | None = None
    slurm_options: dict[str, object] = field(default_factory=dict)

    def for_dependency(self) -> StudyOptions:
        """A dependency is trained whole, with its own spec as it is: no selection or overrides."""
        return StudyOptions(retry_failed=self.retry_failed, allow_drift=self.allow_drift, report=self.report,
                            with_deps=True, executor=self.executor, ray_address=self.ray_address,
                            slurm_options=self.slurm_options)


class Study:
    """One spec's runs and analyses, carried from plan to report."""

    def __init__(self, spec: Path, options: StudyOptions, console: Console, chain: tuple[Path, ...] = ()) -> None:
        self.spec, self.options, self.console = spec, options, console
        self.chain = chain  # the specs that led here through dependencies (to refuse a cycle)
        self.failed = 0  # runs that failed in this study (the others are still fitted)

    def run(self) -> int:
        """Train what the spec lacks, then fit and report. The exit code: 0 done, 1 a run failed,
        75 preempted (the same command resumes), or a dependency's code."""
        code = self.ensure_dependencies(self.selected(self.plan()))
        if code != 0:
            return code
        runs = self.plan()  # sources may have been trained just now: plan again
        from engine.planning.checks import check_plan  # `validate --plan`'s checks, before any training

        check_plan(self.spec, self.options.overrides, analysis=self.options.report)
        if runs[0].spec.analysis.design is not None:
            return self.run_adaptive(runs)
        selected = self.selected(runs)
        check_pretrained_sources(selected)  # before anything of this sweep is written
        stop = self.train_selected(runs, selected)
        if stop is not None:
            return stop
        from engine.study.sweep import is_primary

        if is_primary() and self.options.report:  # process 0 fits and reports
            self.analyse(runs)
        return 1 if self.failed else 0

    def train_selected(self, runs: list[RunPlan], selected: list[RunPlan]) -> int | None:
        """Train `selected`; None when the study may go on to fit (failed runs are counted in
        self.failed: the fit uses the others, the exit code says so), else the exit code to stop
        with (75 preempted, 1 fail_fast, or when other processes still hold runs)."""
        summary = self.train(runs, selected)
        self.failed += summary.failed
        self.console.print(f"{runs[0].experiment}: trained {summary.trained}, skipped {summary.skipped}, "
                           f"failed {summary.failed}")
        if summary.preempted:
            return EXIT_RESUMABLE
        if summary.stopped_early:
            self.console.print("stopped at the first failure (run.failure_policy: fail_fast)")
            return 1
        if summary.busy:  # other processes are still training some runs: they fit when done
            self.console.print(f"fit and report skipped: {summary.busy} runs are being trained by other processes")
            return 1 if self.failed else 0
        return None

    def run_adaptive(self, runs: list[RunPlan]) -> int:
        """`analysis.design`: the initial runs, then fit -> suggest -> train rounds (adaptive.py)."""
        import jax

        from engine.fit.findings import flops_per_param_example
        from engine.study import adaptive
        from engine.study.analysis import fit_sweep

        if self.options.only or self.options.run_ids:
            raise UserError("--only and --run-id do not combine with analysis.design: the design chooses the runs")
        if jax.process_count() > 1:  # the rounds are chosen by one process; the others could not follow
            raise UserError("analysis.design runs on one process: start it without jax.distributed "
                            "(use --executor ray or slurm to spread each round's runs)")
        design = runs[0].spec.analysis.design
        assert design is not None  # run() takes this path only for a spec with analysis.design
        sweep_dir = runs[0].run_dir.parent
        initial = adaptive.initial_runs(runs, design)
        budget = design.budget * sum(run.flops_dense for run in initial)
        rounds = adaptive.read_rounds(sweep_dir)
        while True:
            wanted = {run.run_id for run in initial} | {run_id for r in rounds for run_id in r.run_ids}
            code = self.train_selected(runs, [run for run in runs if run.run_id in wanted])
            if code is not None:
                return code
            runs = self.plan()  # statuses as they are now
            fit, table = fit_sweep(runs, sweep_dir)
            chosen = adaptive.next_round(fit, table, runs, design, rounds, budget, flops_per_param_example(table),
                                         self.console)
            if chosen is None:
                break
            rounds.append(chosen)
            adaptive.record_round(sweep_dir, rounds)  # before training: a resumed study trains the same runs
        if self.options.report:
            self.analyse(runs)
        return 1 if self.failed else 0

    def plan(self) -> list[RunPlan]:
        """Every run of the spec (with the --set overrides), in sweep order."""
        return plan_experiment(self.spec, list(self.options.overrides))

    def selected(self, runs: list[RunPlan]) -> list[RunPlan]:
        """The runs to train: all, or those matching --only and --run-id."""
        selected = select_runs(runs, list(self.options.only))
        return select_run_ids(selected, list(self.options.run_ids))

    def ensure_dependencies(self, runs: list[RunPlan]) -> int:
        """Every spec `runs` need has what they need: trained now (with_deps) or a UserError saying
        which command to run. Returns 0, or the exit code of a dependency that did not finish."""
        from engine.planning.dependencies import dependencies_of

        unmet = [(dep, problem) for dep in dependencies_of(runs, analysis=self.options.report)
                 if (problem := dep.unmet()) is not None]
        if not unmet:
            return 0
        if not self.options.with_deps:
            lines = "\n".join(f"  {dep.spec} ({dep.why}): {problem}" for dep, problem in unmet)
            commands = "\n".join(f"  engine run {spec}" for spec in dict.fromkeys(d.spec for d, _ in unmet))
            raise UserError(f"{self.spec} needs other specs' results first:\n{lines}\nrun first:\n{commands}\n"
                            f"or let this command train them: engine run {self.spec} --with-deps")
        chain = (*self.chain, self.spec.resolve())
        for spec in dict.fromkeys(d.spec for d, _ in unmet):
            if spec.resolve() in chain:
                raise UserError(f"{self.spec}: specs depend on each other "
                                f"({' -> '.join(p.name for p in (*chain, spec))})")
            self.console.print(f"[bold]{self.spec} needs {spec}: running it first[/bold]")
            code = Study(spec, self.options.for_dependency(), self.console, chain).run()
            if code == EXIT_RESUMABLE:
                return code  # preempted: the same command resumes the dependency, then this spec
        still = [(d, problem) for d, _ in unmet if (problem := d.unmet()) is not None]
        if still:  # a failed run this spec does not need is no reason to stop; one it needs is
            lines = "\n".join(f"  {d.spec} ({d.why}): {problem}" for d, problem in still)
            self.console.print(f"[red]{self.spec} not started: its dependencies are still not met[/red]\n{lines}")
            return 1
        return 0

    def train(self, runs: list[RunPlan], selected: list[RunPlan]):  # -> SweepSummary (imports JAX)
        """Train the selected runs through the chosen executor; plan.json describes all runs."""
        from engine.study.executors import ExecutorOptions, execute
        from engine.study.sweep import is_primary, write_plan

        if is_primary():  # multi-host: process 0 writes what the sweep shares
            write_plan(runs, runs[0].run_dir.parent)
        return execute(self.options.executor, selected, self.spec, list(self.options.overrides), self.console,
                       {"retry_failed": self.options.retry_failed, "allow_drift": self.options.allow_drift},
                       ExecutorOptions(self.options.ray_address, dict(self.options.slurm_options)))

    def analyse(self, runs: list[RunPlan]) -> Path | None:
        """Fit and report per the spec's `analysis:`. A partial selection (--only, --run-id) may not
        have enough finished runs for the law yet: then the fit is skipped with the reason."""
        from engine.study.analysis import analyse

        try:
            report_dir = analyse(runs, runs[0].run_dir.parent, self.console)
        except UserError as error:
            if not self.options.only and not self.options.run_ids:
                raise
            self.console.print(f"fit and report skipped: {error}")
            return None
        if report_dir is not None:
            from engine.report import index_path

            self.console.print(f"report: {index_path(report_dir, runs[0].spec.analysis.report.formats)}")
        return report_dir


def select_runs(runs: list[RunPlan], only: list[str]) -> list[RunPlan]:
    """The runs whose coordinates match every FIELD=VALUE (values read as YAML scalars)."""
    selected = runs
    for condition in only:
        field_path, sep, raw = condition.partition("=")
        if not sep or not field_path:
            raise UserError(f"--only {condition}: expected FIELD=VALUE", exit_code=2)
        if not any(field_path in run.coordinates for run in runs):
            axes = ", ".join(sorted({axis for run in runs for axis in run.coordinates})) or "none"
            raise UserError(f"--only {condition}: {field_path} is not a sweep axis (axes: {axes})", exit_code=2)
        value = YAML(typ="safe").load(raw)
        selected = [run for run in selected if run.coordinates.get(field_path) == value]
    if not selected:
        raise UserError(f"--only {' '.join(only)}: no run matches", exit_code=2)
    return selected


def select_run_ids(runs: list[RunPlan], run_ids: list[str]) -> list[RunPlan]:
    """The runs named by `--run-id` (all runs when none is named)."""
    if not run_ids:
        return runs
    known = {run.run_id for run in runs}
    unknown = [run_id for run_id in run_ids if run_id not in known]
    if unknown:
        raise UserError(f"--run-id {' '.join(unknown)}: no such run in this spec (see `engine plan`)", exit_code=2)
    return [run for run in runs if run.run_id in run_ids]


def check_pretrained_sources(runs: list[RunPlan]) -> None:
    """Each pretrained run's source checkpoint exists, is whole and fits the model: one clear error
    before anything is written, rather than a failure halfway through the sweep."""
    from engine.models import abstract_params
    from engine.training.pretrained import check_run_sources

    check_run_sources(runs, lambda run: abstract_params(run.dims))
