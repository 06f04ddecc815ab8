"""Specs that need other specs' results: pretrained sources and the fits analyses compare against.

A spec depends on another when its runs start from that spec's runs (`init.source: {kind: run}`)
or when its analysis reads that spec's fitted law (`analysis.nm_refit.dense_fit` and
`analysis.pretrained_vs_scratch.law` with `{kind: spec}`). `engine plan` lists them with their
status; `engine run` stops with the command to run first, or trains them first (`--with-deps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.planning.plan import RunPlan, plan_experiment
from spec.analysis import SpecFitSource

FIT_FILE = Path("report") / "fit.json"  # where `engine run` writes a sweep's fit (engine.study.analysis)


@dataclass(frozen=True)
class Dependency:
    spec: Path  # the spec that must have run
    why: str  # which field asks for it
    run_ids: frozenset[str] = frozenset()  # its runs that must be done (pretrained sources)
    needs_fit: bool = False  # its fitted law must exist (analyses)

    def unmet(self, working_dir: Path = Path(".")) -> str | None:
        """What is missing, or None when the dependency is satisfied."""
        runs = plan_experiment(self.spec, working_dir=working_dir)
        if self.run_ids:
            sources = [r for r in runs if r.run_id in self.run_ids]
            missing = [r for r in sources if r.status.state != "done"]
            if missing:
                states = ", ".join(f"{r.run_id} {r.status.describe()}" for r in missing)
                return f"{len(missing)} of its {len(self.run_ids)} source run(s) not done ({states})"
            gone = [r for r in sources if not (working_dir / r.run_dir / "checkpoints" / str(r.steps)).is_dir()]
            if gone:
                return f"source run(s) done but their final checkpoint is gone ({', '.join(r.run_id for r in gone)})"
        if self.needs_fit:
            path = fit_file(runs)
            unfinished = sum(r.status.state in ("new", "partial") for r in runs)  # failed runs are final
            if unfinished:
                return f"{unfinished} of its {len(runs)} runs not done, so no final fit yet"
            results = working_dir / runs[0].run_dir.parent / "results.jsonl"
            if not (working_dir / path).is_file():
                return f"no fitted law yet ({path})"
            if results.is_file() and results.stat().st_mtime > (working_dir / path).stat().st_mtime:
                return f"its fit ({path}) is older than its results: `engine run` refits"
        return None


def fit_file(runs: list[RunPlan]) -> Path:
    """The fit.json `engine run` writes for a sweep (relative to the working directory)."""
    return runs[0].run_dir.parent / FIT_FILE


def dependencies_of(runs: list[RunPlan], analysis: bool = True) -> list[Dependency]:
    """The specs `runs` need: one entry per spec and reason, in the order first met."""
    found: list[Dependency] = []
    sources: dict[Path, set[str]] = {}
    for run in runs:  # only runs that will read their source need it (not done, not resuming)
        if run.loads_source() and run.source is not None and run.source.spec_path is not None and run.source.run_id:
            sources.setdefault(run.source.spec_path, set()).add(run.source.run_id)
    for spec, run_ids in sources.items():
        found.append(Dependency(spec, "init.source", run_ids=frozenset(run_ids)))
    if analysis and runs:
        settings = runs[0].spec.analysis
        for field, law in (("analysis.nm_refit.dense_fit", settings.nm_refit and settings.nm_refit.dense_fit),
                           ("analysis.pretrained_vs_scratch.law",
                            settings.pretrained_vs_scratch and settings.pretrained_vs_scratch.law)):
            if isinstance(law, SpecFitSource):
                found.append(Dependency(runs[0].spec_dir / law.spec, field, needs_fit=True))
    return found
