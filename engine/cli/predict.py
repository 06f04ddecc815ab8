"""`engine predict FIT`: loss at (S, N, D) and optimal sparsity at (N, C) from fitted or published
coefficients; 95% intervals when FIT holds bootstrap samples."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.fit.law import LawCoefficients, predict_loss
from engine.fit.result import FittedRanges, load_coefficients
from engine.fit.sopt import optimal_sparsity
from engine.planning.costs import DENSE_COST_ALPHA, pruning_cost_alpha


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict loss at (S, N, D) or optimal sparsity at (N, C)",
        description="FIT is a fit.json or a JSON/YAML file with a_S, b_S, c_S, b_N, a_D, b_D, c in paper units.",
    )
    parser.add_argument("fit", type=Path, help="fit.json, or JSON/YAML with the seven coefficients")
    parser.add_argument("--at", action="append", default=[], metavar="S,N,D",
                        help="loss at sparsity S, non-zeros N, data D (repeatable)")
    parser.add_argument("--sopt", action="append", default=[], metavar="N,C",
                        help="optimal sparsity at non-zeros N, compute C FLOPs (repeatable)")
    parser.add_argument("--flops-per-param", type=float, default=6.0, help="k in C = k N D c_mul (6; 3 for encoder-decoder)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def _numbers(text: str, count: int, flag: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise UserError(f"{flag} {text!r}: expected {count} comma-separated numbers", exit_code=2)
    return values


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return [float(v) for v in np.percentile(values, (2.5, 97.5))]


def fitted_ranges(document: dict | None) -> FittedRanges | None:
    """The S, N and D the fit saw (fit.json's fitted_ranges); None for published coefficients."""
    ranges = (document or {}).get("fitted_ranges")
    return None if not ranges else FittedRanges(**{k: tuple(v) for k, v in ranges.items()})


def _flag(outside: list[str] | None) -> str:
    if outside is None:
        return "  (fitted ranges unknown)"
    return f"  extrapolated in {', '.join(outside)}" if outside else ""


def run(args: argparse.Namespace) -> int:
    loaded = load_coefficients(args.fit)
    ranges = fitted_ranges(loaded.fit_json)
    dense_only = loaded.fit_json is not None and "gains" in loaded.fit_json and loaded.fit_json["gains"] is None
    if args.sopt and dense_only:
        raise UserError(f"--sopt: {args.fit} was fitted to dense runs only; the optimal sparsity is not "
                        "estimable from it (its a_S, b_S, c_S are not determined)")
    if not args.at and not args.sopt:
        raise UserError("nothing to predict: give --at S,N,D and/or --sopt N,C", exit_code=2)
    samples = [LawCoefficients.from_array(row) for row in loaded.samples] if loaded.samples is not None else None
    out: dict[str, list[dict[str, Any]]] = {"at": [], "sopt": []}
    for text in args.at:
        s, n, d = _numbers(text, 3, "--at")
        if not 0 <= s < 1 or n <= 0 or d <= 0:
            raise UserError(f"--at {text!r}: need 0 <= S < 1, N > 0, D > 0", exit_code=2)
        entry: dict[str, Any] = {"sparsity": s, "nonzeros": n, "data": d,
                                    "loss": float(predict_loss(loaded.coefficients, s, n, d)),
                                    # coordinates outside the fitted ranges; null when they are unknown
                                    "extrapolated": None if ranges is None else ranges.outside(s, n, d)}
        if samples:
            entry["loss_interval_95"] = _interval(np.array([float(predict_loss(c, s, n, d)) for c in samples]))
        out["at"].append(entry)
    for text in args.sopt:
        n, c = _numbers(text, 2, "--sopt")
        if n <= 0 or c <= 0:
            raise UserError(f"--sopt {text!r}: need N > 0, C > 0", exit_code=2)
        entry = {"nonzeros": n, "compute": c}
        outside: set[str] = set()
        for label, alpha in (("dense_costs", DENSE_COST_ALPHA), ("sparse_costs", pruning_cost_alpha())):
            entry[f"s_opt_{label}"] = s_opt = float(optimal_sparsity(loaded.coefficients, n, c, args.flops_per_param, alpha))
            if ranges is not None:
                outside.update(ranges.outside(sparsity=s_opt, nonzeros=n))
            if samples:
                entry[f"s_opt_{label}_interval_95"] = _interval(np.array(
                    [float(optimal_sparsity(cs, n, c, args.flops_per_param, alpha)) for cs in samples]))
        entry["extrapolated"] = None if ranges is None else sorted(outside, key="SND".index)
        out["sopt"].append(entry)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for entry in out["at"]:
        interval = entry.get("loss_interval_95")
        extra = f"  95% [{interval[0]:.5g}, {interval[1]:.5g}]" if interval else ""
        print(f"L(S={entry['sparsity']:g}, N={entry['nonzeros']:.4g}, D={entry['data']:.4g}) = {entry['loss']:.6g}{extra}"
              f"{_flag(entry['extrapolated'])}")
    for entry in out["sopt"]:
        parts = []
        for label in ("dense_costs", "sparse_costs"):
            interval = entry.get(f"s_opt_{label}_interval_95")
            extra = f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else ""
            parts.append(f"{label.replace('_', ' ')} {entry[f's_opt_{label}']:.4f}{extra}")
        print(f"S_opt(N={entry['nonzeros']:.4g}, C={entry['compute']:.4g}): " + "; ".join(parts)
              + _flag(entry["extrapolated"]))
    return 0
