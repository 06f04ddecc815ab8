"""After training: fit the law to a sweep's results and write its report, per the spec's
`analysis:` section."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from engine.errors import UserError
from engine.fit.io import ResultsTable
from engine.fit.law import LawCoefficients
from engine.fit.result import FitResult, FitSettings
from engine.planning.checks import held_out_run_ids
from engine.planning.plan import RunPlan, plan_experiment
from engine.results import atomic_write_text, sweep_rows
from spec.analysis import (
    AnalysisSpec,
    FileFitSource,
    LargestNonzerosHoldout,
    NoHoldout,
    RunsHoldout,
    SpecFitSource,
)
from spec.analysis import FitSettings as FitSettingsSpec


def analyse(runs: list[RunPlan], sweep_dir: Path, console: Console) -> Path | None:
    """Fit the law to the sweep's results and write the report, per the spec's analysis section:
    the sweep's own fit (of its from-scratch runs), or an n:m refit against another fit instead
    (Table 3); pruned pretrained runs measured against another fit (Table 4) are a section added
    to either, or the whole report when `fit` is null."""
    from engine.fit import read_table
    from engine.report import write_blocks

    analysis = runs[0].spec.analysis
    if analysis.fit is None and analysis.nm_refit is None and analysis.pretrained_vs_scratch is None:
        return None
    if not sweep_rows(sweep_dir):
        console.print("no finished runs: nothing to fit")
        return None
    table = read_table(sweep_dir / "results.csv")
    report_dir = sweep_dir / "report"
    spec_dir = runs[0].spec_dir
    study_blocks = []
    if analysis.pretrained_vs_scratch is not None:  # Table 4 adds to the sweep's own fit, never replaces it
        from engine.report.studies import pretrained_vs_scratch_blocks

        law, where = load_law(analysis.pretrained_vs_scratch.law, spec_dir, "analysis.pretrained_vs_scratch.law")
        study_blocks = pretrained_vs_scratch_blocks(law, where, with_pretrain_data(table, runs))
    if analysis.nm_refit is None and analysis.fit is not None:
        return _fit_report(runs, report_dir, sweep_dir, study_blocks)
    blocks = []
    if analysis.nm_refit is not None:
        blocks += _nm_refit(analysis, table, spec_dir, report_dir)
    write_blocks(report_dir, blocks + study_blocks, f"{runs[0].experiment}: sparse scaling studies",
                 analysis.report.formats)
    return report_dir


def with_pretrain_data(table: ResultsTable, runs: list[RunPlan]) -> ResultsTable:
    """The table with each pretrained row's `pretrain_data` (its source's D) taken from the plan
    where the results lack it (rows written before the column existed)."""
    source_data = {run.run_id: run.source.data for run in runs if run.source is not None}
    run_ids = [str(r) for r in table.extra.get("run_id", [])]
    if not run_ids or not source_data:
        return table
    recorded = table.extra.get("pretrain_data") or [""] * len(table)
    filled = [value if value not in ("", None) else source_data.get(run_id, "")
              for value, run_id in zip(recorded, run_ids, strict=True)]
    return replace(table, extra={**table.extra, "pretrain_data": filled})


def _fit_settings(settings: FitSettingsSpec | None, holdout: str, analysis: AnalysisSpec | None = None,
                  **extra: Any) -> FitSettings:
    """The engine's fit settings from the spec's `analysis:`: how to fit (`fit`), and what to derive
    from the law (`gains`, `optimal_sparsity`, `extrapolation`; a null section derives nothing)."""
    settings = settings or FitSettingsSpec(huber_delta=1e-2, log_loss=False)  # the paper's n:m setting
    derived: dict[str, Any] = {}
    if analysis is not None:
        derived = {
            "gain_sparsities": tuple(analysis.gains.sparsities) if analysis.gains else (),
            "sopt_costs": tuple(analysis.optimal_sparsity.costs) if analysis.optimal_sparsity else (),
            "sopt_sparsities": tuple(analysis.optimal_sparsity.sparsities) if analysis.optimal_sparsity else (),
            "extrapolation": tuple((p.sparsity, p.nonzeros, p.data) for p in analysis.extrapolation),
            "isoflop": None if analysis.isoflop is None else (analysis.isoflop.budget_tolerance, analysis.isoflop.min_sizes),
        }
    return FitSettings(huber_delta=settings.huber_delta, log_loss=settings.log_loss, starts=settings.starts,
                       seed=settings.seed, bootstrap=settings.bootstrap, holdout=holdout, **derived, **extra)


def fit_sweep(runs: list[RunPlan], sweep_dir: Path) -> tuple[FitResult, ResultsTable]:
    """The law fitted to the sweep's results as the spec's `analysis:` says."""
    from engine.fit import fit_law, read_table

    analysis = runs[0].spec.analysis
    if analysis.fit is None:
        raise UserError("analysis.fit is null: nothing to fit (analysis.design needs a fit)")
    table = read_table(sweep_dir / "results.csv")
    if isinstance(analysis.fit.holdout, RunsHoldout):
        table = with_held_out_column(table, held_out_run_ids(analysis.fit.holdout, runs))
    holdout = _holdout_expression(analysis.fit.holdout, sweep_rows(sweep_dir), runs)
    return fit_law(table, _fit_settings(analysis.fit, holdout, analysis)), table


def _fit_report(runs: list[RunPlan], report_dir: Path, sweep_dir: Path, study_blocks: list) -> Path:
    from engine.report import write_report

    fit, table = fit_sweep(runs, sweep_dir)
    extra = _design_blocks(runs, fit, table, sweep_dir) if runs[0].spec.analysis.design is not None else []
    reference = synthetic_images_reference(runs)
    if reference is not None:
        from engine.report.studies import task_floor_blocks

        extra += task_floor_blocks(reference, fit)
    write_report(report_dir, fit, table, formats=runs[0].spec.analysis.report.formats,
                 extra_blocks=extra + study_blocks, own_table4=runs[0].spec.analysis.pretrained_vs_scratch is None)
    return report_dir


def synthetic_images_reference(runs: list[RunPlan]) -> dict[str, float] | None:
    """The known losses (engine.data.synthetic.SyntheticImages.reference_losses) of the task when every
    run trains on one built-in synthetic image task, else None. The task depends on the source and
    the image shape only, never on the width, so any run's source serves."""
    from engine.data import build_source
    from engine.planning.plan import source_settings

    first = runs[0]
    source = first.spec.data.source
    if source.kind != "synthetic_images":
        return None
    shape = (first.dims.image_size, first.dims.channels, first.dims.num_classes)
    if any(run.spec.data.source != source or (run.dims.image_size, run.dims.channels, run.dims.num_classes) != shape
           for run in runs):
        return None
    data = build_source(source.kind, source_settings(first.spec.data), first.dims, first.batch_size, source.seed,
                        first.spec_dir, first.steps)
    return data.reference_losses()  # type: ignore[attr-defined]  # SyntheticImages has it


def _design_blocks(runs: list[RunPlan], fit: FitResult, table: ResultsTable, sweep_dir: Path) -> list:
    """The adaptive design's rounds: the target per round and the compute, beside the whole grid's."""
    from engine.fit.design import parse_target
    from engine.fit.findings import flops_per_param_example
    from engine.report.studies import design_blocks
    from engine.study import adaptive

    design = runs[0].spec.analysis.design
    assert design is not None  # only called for a spec with analysis.design
    sd, interval = adaptive.target_spread(fit, parse_target(design.target), flops_per_param_example(table))
    initial_flops = sum(run.flops_dense for run in adaptive.initial_runs(runs, design))
    summary = adaptive.design_summary(adaptive.read_rounds(sweep_dir), sd, interval, initial_flops,
                                      sum(run.flops_dense for run in runs), design.target)
    (sweep_dir / "report").mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "report" / "design.json", json.dumps(summary, indent=1) + "\n")
    return design_blocks(summary)


# The column that marks the runs a `holdout: {kind: runs}` selects; the fit holds out `held_out==1`.
HELD_OUT_COLUMN = "held_out"


def with_held_out_column(table: ResultsTable, held: set[str]) -> ResultsTable:
    """The table with HELD_OUT_COLUMN 1 for the rows of `held` runs, 0 for the others."""
    run_ids = table.extra.get("run_id") or [""] * len(table)
    flags: list[object] = [1 if str(run_id) in held else 0 for run_id in run_ids]
    return replace(table, extra={**table.extra, HELD_OUT_COLUMN: flags})


def load_law(source: SpecFitSource | FileFitSource, spec_dir: Path, field: str) -> tuple[LawCoefficients, str]:
    """The fitted law another spec's `engine run` wrote (or a fit.json file), and where it is."""
    from engine.fit.result import load_coefficients
    from engine.planning.dependencies import fit_file

    if isinstance(source, SpecFitSource):
        path = fit_file(plan_experiment(spec_dir / source.spec))
        missing = f"run `engine run {spec_dir / source.spec}` first"
    else:
        path = spec_dir / source.path
        missing = "write it with `engine fit`"
    if not path.is_file():
        raise UserError(f"{field}: no fitted law at {path}; {missing}")
    return load_coefficients(path).coefficients, path.as_posix()


def _nm_refit(analysis, table: ResultsTable, spec_dir: Path, report_dir: Path) -> list:
    """Table 3 from this sweep's n:m results, the dense law the spec names and that spec's dense
    runs (S = 0 has no pattern: the same runs belong to every pattern's law)."""
    from engine.fit import read_table
    from engine.planning.dependencies import fit_file
    from engine.report.studies import nm_refit_blocks

    source = analysis.nm_refit.dense_fit
    dense, where = load_law(source, spec_dir, "analysis.nm_refit.dense_fit")
    dense_rows = None
    if isinstance(source, SpecFitSource):
        results = fit_file(plan_experiment(spec_dir / source.spec)).parent.parent / "results.csv"
        if results.is_file():
            other = read_table(results)
            dense_rows = other.select(other.sparsity == 0)
    groups = nm_refit_groups(table, dense, where, _fit_settings(analysis.fit, "none"), dense_rows)
    report_dir.mkdir(parents=True, exist_ok=True)
    for group in groups:
        group.fit.write(report_dir / f"fit_{group.label.replace(':', '')}.json")  # fit_n4.json, fit_n8.json
    return nm_refit_blocks(groups, dense, where)


def nm_refit_groups(
    table: ResultsTable, dense: LawCoefficients, dense_source: str, settings: FitSettings,
    dense_rows: ResultsTable | None = None,
) -> list:
    """Section 4.1: per group size m (n:4, n:8), a_S, b_S, c_S fitted with b_N, a_D, b_D, c frozen at
    `dense`. Rows that are not n:m (pattern column like '2:4') are left out. `dense_rows` (S = 0
    runs) join every group: without them the law at S = 0, a_S + c_S, and so the gains, rest on
    extrapolation from two sparsity levels only."""
    from engine.fit import fit_law
    from engine.report.studies import NmGroup

    patterns = [str(p) for p in table.extra.get("pattern", [])]
    group_of = [p.split(":")[1] if ":" in p else None for p in patterns]
    if not any(group_of):
        raise UserError("analysis.nm_refit: the results have no n:m runs (column `pattern` like 2:4)")
    groups = []
    frozen = replace(settings, freeze_dense=dense, freeze_dense_source=dense_source)
    for m in sorted({g for g in group_of if g}, key=int):
        rows = np.array([g == m for g in group_of])
        members = tuple(dict.fromkeys(p for p, g in zip(patterns, group_of, strict=True) if g == m))
        sub = table.select(rows)
        if dense_rows is not None and len(dense_rows):
            sub = stack_tables(sub, dense_rows)
        groups.append(NmGroup(label=f"n:{m}", patterns=members, table=sub, fit=fit_law(sub, frozen),
                              dense_runs=0 if dense_rows is None else len(dense_rows)))
    return groups


def stack_tables(first: ResultsTable, second: ResultsTable) -> ResultsTable:
    """The rows of both tables; an extra column missing from one side is blank there."""
    from engine.fit.io import table_from_arrays

    keys = list(dict.fromkeys([*first.extra, *second.extra]))
    extra = {k: [*first.extra.get(k, [""] * len(first)), *second.extra.get(k, [""] * len(second))] for k in keys}
    sparsity, nonzeros, data, loss = (np.concatenate([getattr(first, c), getattr(second, c)])
                                      for c in ("sparsity", "nonzeros", "data", "loss"))
    return table_from_arrays(sparsity, nonzeros, data, loss, extra=extra, source=f"{first.source} + {second.source}")


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
    return f"{HELD_OUT_COLUMN}==1"  # RunsHoldout: the column with_held_out_column adds
