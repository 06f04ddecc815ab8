"""`engine suggest FIT --candidates SOURCE --target TARGET --budget FLOPS`: the runs that pin a
target down with the least compute (engine/fit/design.py says how).

SOURCE is a spec (its sweep spans the candidate grid; each candidate planned with its exact N, D and
training FLOPs) or a CSV with columns sparsity, nonzeros, data (FLOPs = k N D / (1 - S): dense costs,
what masked training spends). `--out SPEC` writes a spec that `extends:` the candidate spec with
exactly the proposed runs, so `engine run SPEC` trains them into the same study.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path

from engine.errors import UserError
from engine.fit.design import Candidate, Design, parse_target, suggest_runs
from engine.fit.findings import flops_per_param_example
from engine.fit.io import ResultsTable
from engine.fit.result import find_fit_json, load_fit_with_table

HELD_OUT_WARNING = 0.02  # a held-out error above this: the law itself may be wrong; say so first


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "suggest", help="propose the runs that pin a target down with the least compute",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("fit", type=Path, help="fit.json, a fit directory, or a sweep directory (its report/fit.json)")
    parser.add_argument("--candidates", type=Path, required=True, metavar="SOURCE",
                        help="a spec whose sweep spans the candidate runs, or a CSV with sparsity, nonzeros, data")
    parser.add_argument("--target", default="all", metavar="TARGET",
                        help="gain:S, a coefficient (a_S b_S c_S b_N a_D b_D c), loss:S,N,D, sopt:N,C, "
                             "or all (every coefficient: D-optimal); default all")
    parser.add_argument("--budget", required=True, metavar="FLOPS",
                        help="training FLOPs to spend: a number (1e18) or a multiple of the fitted runs' FLOPs (2x)")
    parser.add_argument("--batch", type=int, default=None, metavar="K",
                        help="propose at most K runs (a batch to train in parallel; each chosen given the others)")
    parser.add_argument("--flops-per-param", type=float, default=None, metavar="K",
                        help="k of C = k N D for CSV candidates (default: 3 for T5 results, else 6)")
    parser.add_argument("--out", type=Path, default=None, metavar="SPEC",
                        help="write a spec that extends the candidate spec with exactly the proposed runs")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def parse_budget(text: str, table: ResultsTable, k: float) -> float:
    """FLOPs from `1e18` or `2x` (times the FLOPs of the fitted runs)."""
    text = text.strip()
    try:
        if text.endswith("x"):
            return float(text[:-1]) * fitted_flops(table, k)
        value = float(text)
    except ValueError:
        raise UserError(f"--budget {text}: expected FLOPs (1e18) or a multiple of the fitted runs' (2x)", exit_code=2) from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--budget {text}: must be a positive, finite number", exit_code=2)
    return value


def fitted_flops(table: ResultsTable, k: float) -> float:
    """The training FLOPs the table's runs took: its flops_dense column, else k N D / (1 - S)."""
    recorded = table.numeric_column("flops_dense")
    if recorded is not None:
        return float(recorded.sum())
    return float((k * table.nonzeros * table.data / (1 - table.sparsity)).sum())


def spec_candidates(spec: Path) -> list[Candidate]:
    from engine.planning.plan import plan_experiment

    return [Candidate(run.sparsity, float(run.nonzeros), float(run.data), float(run.flops_dense),
                      dict(run.coordinates), run.run_id)
            for run in plan_experiment(spec) if run.init == "scratch"]


def csv_candidates(path: Path, k: float) -> list[Candidate]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read candidates ({error})") from error
    candidates = []
    for line, row in enumerate(rows, start=2):
        try:
            s, n, d = (float(row[name]) for name in ("sparsity", "nonzeros", "data"))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}:{line}: need numbers in columns sparsity, nonzeros, data") from None
        if not (0 <= s < 1 and n > 0 and d > 0 and math.isfinite(n * d)):
            raise UserError(f"{path}:{line}: need 0 <= sparsity < 1 and positive, finite nonzeros and data")
        candidates.append(Candidate(s, n, d, k * n * d / (1 - s)))
    if not candidates:
        raise UserError(f"{path}: no candidate rows")
    return candidates


def write_spec(path: Path, candidate_spec: Path, design: Design) -> None:
    """A spec extending the candidate spec whose sweep is exactly the proposed runs (a zip)."""
    from io import StringIO

    from ruamel.yaml import YAML

    axes = list(dict.fromkeys(axis for p in design.proposals for axis in p.candidate.coordinates))
    document: dict[str, object] = {"extends": os.path.relpath(candidate_spec.resolve(), path.resolve().parent)}
    if axes:
        document["sweep"] = {"zip": {axis: [p.candidate.coordinates[axis] for p in design.proposals] for axis in axes}}
    yaml = YAML()
    yaml.default_flow_style = None
    buffer = StringIO()
    buffer.write(f"# Suggested by `engine suggest` for {design.target.text}: {len(design.proposals)} runs, "
                 f"{design.spent:.3g} training FLOPs; predicted sd {design.sd_before:.3g} -> "
                 f"{design.proposals[-1].target_sd_after:.3g}.\n")
    yaml.dump(document, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    fit_json = find_fit_json(args.fit)
    if fit_json is None:
        raise UserError(f"{args.fit}: no fit.json there (run `engine fit` or `engine run` first)")
    fit, table = load_fit_with_table(fit_json)
    target = parse_target(args.target)
    if args.batch is not None and args.batch < 1:
        raise UserError("--batch must be at least 1", exit_code=2)
    k = args.flops_per_param or flops_per_param_example(table)
    from_spec = args.candidates.suffix.lower() in (".yaml", ".yml")
    if args.out is not None and not from_spec:
        raise UserError("--out writes a spec extending the candidate spec: give --candidates SPEC", exit_code=2)
    if not args.candidates.is_file():
        raise UserError(f"--candidates {args.candidates}: no such file")
    candidates = spec_candidates(args.candidates) if from_spec else csv_candidates(args.candidates, k)
    budget = parse_budget(args.budget, table, k)
    design = suggest_runs(fit, table, candidates, target, budget, k, args.batch)
    if args.out is not None and design.proposals:
        write_spec(args.out, args.candidates, design)
    print_design(design, fit, args, budget, len(candidates))
    return 0


def print_design(design: Design, fit, args: argparse.Namespace, budget: float, total: int) -> None:  # noqa: ANN001
    held = None if fit.holdout is None else fit.holdout.mean_absolute_relative_error
    if args.json:
        print(json.dumps({
            "target": design.target.text, "target_sd_before": design.sd_before,
            "target_sd_after": design.proposals[-1].target_sd_after if design.proposals else design.sd_before,
            "budget_flops": budget, "spent_flops": design.spent, "candidates": total,
            "already_in_results": total - design.considered, "noise_sd": design.noise_sd,
            "held_out_error": held,
            "flops": "training FLOPs with dense costs (what masked training spends): the planner's flops_dense, "
                     "or k N D / (1 - S) for CSV candidates",
            "runs": [{"sparsity": p.candidate.sparsity, "nonzeros": p.candidate.nonzeros, "data": p.candidate.data,
                      "flops": p.candidate.flops, "target_sd_after": p.target_sd_after, "run_id": p.candidate.run_id,
                      "coordinates": p.candidate.coordinates} for p in design.proposals],
            "spec": None if args.out is None or not design.proposals else str(args.out),
        }, indent=1))
        return
    if held is not None and held > HELD_OUT_WARNING:
        print(f"warning: the fit misses its held-out runs by {100 * held:.1f}% on average; check the law before "
              "spending compute to narrow its intervals")
    print(f"target {design.target.text}: predicted sd {design.sd_before:.4g} now "
          f"({total - design.considered} of {total} candidates are already in the results)")
    if not design.proposals:
        print(f"no candidate fits the budget of {budget:.3g} FLOPs")
        return
    print(f"{'sparsity':>9} {'nonzeros':>11} {'data':>11} {'FLOPs':>10} {'sd after':>10}")
    for p in design.proposals:
        c = p.candidate
        print(f"{c.sparsity:>9g} {c.nonzeros:>11.4g} {c.data:>11.4g} {c.flops:>10.3g} {p.target_sd_after:>10.4g}")
    print(f"{len(design.proposals)} runs, {design.spent:.3g} of {budget:.3g} FLOPs (dense costs); "
          f"sd {design.sd_before:.4g} -> {design.proposals[-1].target_sd_after:.4g}")
    if args.out is not None:
        print(f"wrote {args.out}: `engine run {args.out}` trains exactly these runs")
