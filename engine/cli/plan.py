"""`engine plan SPEC [--json] [--set PATH=VALUE]`: every run of a spec before any compute.

One row per sweep point: run id, coordinates, d_model, N (non-zeros of the sparsified weights),
dense size N/(1-S), steps, batch size, D (examples for vit, tokens for t5/decoder), training
FLOPs with dense and with sparse costs, init, and status read from the output directory
(new / partial at step k / done / failed). Totals at the bottom. `--json` prints the same for
machines (what `runs/<name>/plan.json` holds).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.planning.dependencies import dependencies_of
from engine.planning.plan import RunPlan, plan_experiment, totals
from spec.issues import SpecError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="list every run of a spec: sizes, D, FLOPs, status", description=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("spec", type=Path, metavar="SPEC", help="experiment spec file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field before validation, e.g. --set data.batch_size=16 (repeatable)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        plans = plan_experiment(args.spec, args.overrides)
    except SpecError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        print(f"{args.spec}: invalid spec, {len(error.issues)} error(s)", file=sys.stderr)
        return 1
    dependencies = [(dep, dep.unmet()) for dep in dependencies_of(plans)]
    if args.json:
        document = {
            "spec": args.spec.as_posix(),
            "name": plans[0].experiment,
            "runs": [plan.to_json() for plan in plans],
            "totals": totals(plans),
            "dependencies": [
                {"spec": dep.spec.as_posix(), "why": dep.why, "runs": sorted(dep.run_ids),
                 "needs_fit": dep.needs_fit, "ready": problem is None, "missing": problem}
                for dep, problem in dependencies
            ],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render_table(plans))
        for line in data_lines(plans):
            print(line)
        for dep, problem in dependencies:
            print(f"depends on {dep.spec} ({dep.why}): {'ready' if problem is None else problem}")
    return 0


def data_lines(plans: Sequence[RunPlan]) -> list[str]:
    """Per file source: examples available against the most any run needs, in epochs."""
    from engine.planning.data_budget import data_budget

    worst: dict[str, tuple[float, str]] = {}
    for plan in plans:
        budget = data_budget(plan)
        if budget is None:
            continue
        how = "prepared" if budget.exact else "estimated from file sizes"
        line = (f"data {budget.label} ({how}): {budget.available} training examples; run {plan.run_id} "
                f"needs {budget.needed} ({budget.epochs:.3g} epochs), the most of any run")
        if budget.label not in worst or budget.epochs > worst[budget.label][0]:
            worst[budget.label] = (budget.epochs, line)
    return [line for _, line in worst.values()]


def _count(value: float) -> str:
    """Compact counts to 3 significant digits: 4704, 19.2K, 42.5M, 1.07G, 3.28T."""
    if value < 10_000:
        return f"{value:g}"
    rounded = float(f"{value:.3g}")  # 999999 -> 1e6, so it reads 1M rather than 1e+03K
    for divisor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if rounded >= divisor:
            return f"{rounded / divisor:.3g}{suffix}"
    return f"{value:g}"


def _coordinate(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _count(value)
    return json.dumps(value, separators=(",", ":"))


def render_table(plans: Sequence[RunPlan]) -> str:
    axes = list(plans[0].coordinates) if plans else []
    # targets backbone_and_matched_embeddings: the embeddings' own level, beside N (backbone only)
    matched = any(plan.embedding_sparsity is not None for plan in plans)
    header = ["run_id", *axes, "d_model", "N", "N/(1-S)", *(["S emb"] if matched else []),
              "steps", "batch", "D", "FLOPs dense", "FLOPs sparse", "init", "status"]
    rows = [
        [
            plan.run_id,
            *(_coordinate(plan.coordinates[axis]) for axis in axes),
            str(plan.d_model),
            _count(plan.nonzeros),
            _count(plan.dense_params),
            *([f"{plan.embedding_sparsity or 0.0:.4g}"] if matched else []),
            _count(plan.steps),
            str(plan.batch_size),
            f"{_count(plan.data)} {'ex' if plan.data_unit == 'examples' else 'tok'}",
            f"{plan.flops_dense:.3g}",
            f"{plan.flops_sparse:.3g}",
            plan.init,
            plan.status.describe(),
        ]
        for plan in plans
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    total = totals(plans)
    states = ", ".join(f"{total[state]} {state}" for state in ("new", "partial", "done", "failed") if total[state])
    lines.append(
        f"{total['runs']} runs ({states}); FLOPs: {total['flops_dense']:.3g} dense, {total['flops_sparse']:.3g} sparse"
    )
    budgeted = [(plan, plan.spec.data.flops) for plan in plans if plan.spec.data.flops is not None]
    if budgeted:  # data.flops: how closely whole steps meet each run's budget (FLOPs sparse = the budget)
        worst = max(abs(plan.flops_sparse / budget - 1) for plan, budget in budgeted)
        lines.append(f"data.flops budgets: {len(budgeted)} runs, each within {100 * worst:.2f}% of its budget")
    return "\n".join(lines)
