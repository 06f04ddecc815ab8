"""What a fit lets one say, and how surely: the quantities a report states, each with its bootstrap
interval, marked where it leaves the fitted ranges of S, N and D, and withheld where the data
cannot estimate it (a dense-only table says nothing about sparsity).

    findings = derive_findings(fit, table)   # what to derive: fit.settings (gain sparsities, costs, points)
    findings.to_json()           # fit.json's "findings"
    findings.summary             # sentences for the report's opening section

Everything here is computed from the fitted coefficients and the bootstrap samples (B, 7); nothing
is refitted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.fit import paper
from engine.fit.gains import gain, gains_from_samples
from engine.fit.io import ResultsTable
from engine.fit.isoflop import IsoflopResult, isoflop_analysis
from engine.fit.law import SPARSITY_COEFFICIENTS, LawCoefficients, predict_loss
from engine.fit.result import FitResult, FittedRanges
from engine.fit.sopt import chinchilla_multiple
from engine.planning.costs import DENSE_COST_ALPHA, pruning_cost_alpha

NOT_ESTIMABLE = "not estimable from this data"
COST_ALPHAS = {"dense": DENSE_COST_ALPHA, "sparse": pruning_cost_alpha()}  # eq. 4's schedule for sparse costs


@dataclass(frozen=True)
class Estimate:
    """A derived number with its 95% bootstrap interval (None without a bootstrap)."""

    value: float
    interval: tuple[float, float] | None = None
    extrapolated: list[str] = field(default_factory=list)  # coordinates outside the fitted ranges

    def text(self, digits: int = 3, unit: str = "") -> str:
        value = f"{self.value:.{digits}g}{unit}"
        if self.interval is not None:
            value += f" [{self.interval[0]:.{digits}g}, {self.interval[1]:.{digits}g}]"
        if self.extrapolated:
            value += f" (extrapolated in {', '.join(self.extrapolated)})"
        return value


@dataclass(frozen=True)
class Findings:
    ranges: FittedRanges
    dense_only: bool
    chinchilla_form: dict[str, Estimate]  # A, alpha, B, beta, E
    gains: dict[float, Estimate] | None  # None: not estimable (no sparse runs)
    limit_gain: Estimate | None  # gain as S -> 1
    sopt_multiples: dict[str, dict[float, Estimate]] | None  # cost -> S -> multiple of Chinchilla
    predictions: list[tuple[tuple[float, float, float], Estimate]]
    not_pinned: dict[str, str]  # coefficient -> why
    suggestions: list[str]  # runs that would pin the rest down
    summary: list[str]  # sentences, first thing in the report
    isoflop: IsoflopResult | None = None

    def to_json(self) -> dict[str, Any]:
        def estimate(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else {"value": e.value, "interval_95": None if e.interval is None else list(e.interval),
                                           "extrapolated": e.extrapolated}

        return {
            "fitted_ranges": asdict(self.ranges),
            "dense_only": self.dense_only,
            "not_estimable": ([*SPARSITY_COEFFICIENTS, "gains", "optimal_sparsity"] if self.dense_only else []),
            "chinchilla_form": {k: estimate(v) for k, v in self.chinchilla_form.items()},
            "gains": NOT_ESTIMABLE if self.gains is None else {str(s): estimate(e) for s, e in self.gains.items()},
            "limit_gain": NOT_ESTIMABLE if self.limit_gain is None else estimate(self.limit_gain),
            "optimal_sparsity_chinchilla_multiples": NOT_ESTIMABLE if self.sopt_multiples is None else {
                cost: {str(s): estimate(e) for s, e in by_s.items()} for cost, by_s in self.sopt_multiples.items()},
            "predictions": [{"sparsity": p[0], "nonzeros": p[1], "data": p[2], "loss": estimate(e)}
                            for p, e in self.predictions],
            "not_pinned": self.not_pinned,
            "suggestions": self.suggestions,
            "summary": self.summary,
            "isoflop": None if self.isoflop is None else self.isoflop.to_json(),
        }


def is_paper_t5(table: ResultsTable) -> bool:
    return paper.dataset_fingerprint(table.sparsity, table.nonzeros, table.data, table.loss) == paper.T5_C4_FINGERPRINT


def data_unit(table: ResultsTable) -> str:
    """D's unit: tokens for language models (and the paper's T5 data), examples for vision."""
    families = {str(f).lower() for f in table.extra.get("family", [])}
    if is_paper_t5(table) or (families and families <= {"t5", "decoder"}):
        return "tokens"
    if families == {"vit"}:
        return "examples"
    return "examples or tokens"


def flops_per_param_example(table: ResultsTable) -> float:
    """k of C = k N D: 3 for encoder-decoder (T5) results, else 6 (engine/planning/costs.py)."""
    family = table.extra.get("family")
    if is_paper_t5(table) or (family and all(str(f).lower() == "t5" for f in family)):
        return 3.0
    return 6.0


def _interval(values: np.ndarray) -> tuple[float, float] | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return None
    low, high = np.percentile(values, (2.5, 97.5))
    return float(low), float(high)


def _estimate(value: float, samples: np.ndarray | None, extrapolated: list[str] | None = None) -> Estimate:
    return Estimate(float(value), None if samples is None else _interval(samples), extrapolated or [])


def chinchilla_form(law: LawCoefficients, samples: np.ndarray | None) -> dict[str, Estimate]:
    """The dense law in Hoffmann et al.'s form L = E + A / N^alpha + B / D^beta."""
    def form(a_s, c_s, b_n, a_d, b_d, c):  # noqa: ANN001, ANN202 - floats or arrays alike
        return {"A": a_s + c_s, "alpha": b_n, "B": a_d**b_d, "beta": b_d, "E": c}

    best = form(law.a_S, law.c_S, law.b_N, law.a_D, law.b_D, law.c)
    drawn = None if samples is None else form(samples[:, 0], samples[:, 2], samples[:, 3], samples[:, 4],
                                             samples[:, 5], samples[:, 6])
    return {name: _estimate(value, None if drawn is None else drawn[name]) for name, value in best.items()}


def _multiples_from_samples(samples: np.ndarray, sparsity: float, alpha: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.array([chinchilla_multiple(LawCoefficients.from_array(row), sparsity, alpha) for row in samples])


def _limit_gain(law: LawCoefficients) -> float:
    with np.errstate(all="ignore"):  # a tiny c_S ratio with a small b_N overflows: an infinite gain
        return float(np.float64(law.c_S / (law.a_S + law.c_S)) ** (-1.0 / law.b_N))


def _suggestions(fit: FitResult, table: ResultsTable, ranges: FittedRanges, dense_only: bool,
                 not_pinned: dict[str, str]) -> list[str]:
    """Runs that would pin down what this data leaves loose, from the design's own gaps."""
    out = []
    levels = sorted(set(np.round(table.sparsity, 6)))
    if dense_only:
        out.append("Add sparse runs (e.g. S = 0.5, 0.75 and 0.875) at the sizes and lengths already run: "
                   "without them a_S, b_S, c_S, the gains and the optimal sparsity cannot be estimated.")
    elif any(name in not_pinned for name in SPARSITY_COEFFICIENTS):
        higher = [s for s in (0.5, 0.75, 0.875, 0.9375) if s > ranges.sparsity[1] + 1e-9]
        if len([s for s in levels if s > 0]) < 3 or higher:
            extra = f"S = {higher[0]:g}" if higher else "a third sparsity level"
            out.append(f"Add runs at {extra} (now S up to {ranges.sparsity[1]:g}, "
                       f"{len([s for s in levels if s > 0])} sparse level(s)): the sparsity term's curvature "
                       "(b_S) and its limit (c_S) are set by the highest sparsities.")
    n_span = ranges.nonzeros[1] / ranges.nonzeros[0]
    if "b_N" in not_pinned or ("c" in not_pinned and n_span < 10):
        out.append(f"Widen the N range by 4x (now {ranges.nonzeros[0]:.3g} to {ranges.nonzeros[1]:.3g}, {n_span:.2g}x).")
    d_values = np.unique(table.data)
    d_span = ranges.data[1] / ranges.data[0]
    if any(name in not_pinned for name in ("a_D", "b_D")) or ("c" in not_pinned and d_span < 10):
        out.append(f"Add longer training runs (now {len(d_values)} distinct D spanning {d_span:.2g}x): "
                   "the data term and the irreducible loss c are told apart only by how the loss flattens with D.")
    return out


def _summary(fit: FitResult, findings_parts: dict[str, Any], ranges: FittedRanges, dense_only: bool,
             not_pinned: dict[str, str], suggestions: list[str], unit_d: str) -> list[str]:
    ch = findings_parts["chinchilla_form"]
    sparsity = ("only dense runs (S = 0)" if dense_only else f"S in [{ranges.sparsity[0]:g}, {ranges.sparsity[1]:g}]")
    sentences = [
        f"{fit.rows_used} runs fitted, {sparsity}, "
        f"N in [{ranges.nonzeros[0]:.3g}, {ranges.nonzeros[1]:.3g}], D in [{ranges.data[0]:.3g}, "
        f"{ranges.data[1]:.3g}] {unit_d}; the fit is {fit.diagnostics.verdict}"
        + (f" and predicts the held-out runs within {100 * fit.holdout.mean_absolute_relative_error:.2f}% "
           "(mean absolute error)." if fit.holdout is not None else " (no held-out check)."),
    ]
    if dense_only:
        sentences.append(
            f"Dense law (Chinchilla form): L = E + A / N^alpha + B / D^beta with alpha = {ch['alpha'].text()}, "
            f"beta = {ch['beta'].text()}, E = {ch['E'].text()}. The data have no sparse run: sparsity's effect "
            "(a_S, b_S, c_S), the gains and the optimal sparsity are not estimable from them.")
    else:
        gains = findings_parts["gains"]
        top = max(gains) if gains else None
        sentences.append(
            f"1. Loss against non-zeros is one power law for every sparsity, shifted: slope b_N = "
            f"{ch['alpha'].text()} (the law assumes one slope; the residual figures show how well that holds).")
        if top is not None:
            listed = "; ".join(f"S = {s:g}: {e.text(unit='x')}" for s, e in gains.items())
            limit = findings_parts["limit_gain"]
            sentences.append(
                f"2. Sparser is better at equal non-zeros, with diminishing returns: a sparse model matches a dense one "
                f"this many times larger ({listed}); the limit as S -> 1 is {limit.text(unit='x')}.")
        sentences.append(
            f"3. Sparsity and data act independently in the law: the data exponent is b_D = {ch['beta'].text()} at "
            f"every sparsity, and the irreducible loss c = {ch['E'].text()}.")
        multiples = findings_parts["sopt_multiples"]
        if multiples and any(multiples.values()):
            s = min(next(iter(multiples.values())))  # the lowest declared sparsity
            costs = "; ".join(f"{by_s[s].text(unit='x')} with {cost} costs" for cost, by_s in multiples.items())
            sentences.append(f"{100 * s:g}% sparsity becomes optimal once training runs this many times the "
                             f"Chinchilla-optimal length: {costs}.")
    if not_pinned:
        sentences.append("Not pinned down by this data: " + "; ".join(f"{k} ({v})" for k, v in not_pinned.items()) + ".")
    else:
        sentences.append("Every coefficient is pinned down (95% bootstrap intervals within 10x).")
    sentences += [f"Runs that would teach more: {s}" for s in suggestions]
    return sentences


def derive_findings(fit: FitResult, table: ResultsTable, unit_d: str = "examples or tokens", k: float = 6.0) -> Findings:
    """Everything the report says about the fitted law, from the fit's runs (`table` is the whole
    table; the fitted rows are `fit.fit_mask`)."""
    fitted = table.select(np.asarray(fit.fit_mask))
    ranges = fit.fitted_ranges or FittedRanges.of(fitted)
    questions = fit.settings
    dense_only = bool(np.all(fitted.sparsity == 0.0))
    law, samples = fit.coefficients, fit.bootstrap_samples
    not_pinned = {k: v for k, v in fit.poorly_determined().items() if not (dense_only and k in SPARSITY_COEFFICIENTS)}
    parts: dict[str, Any] = {"chinchilla_form": chinchilla_form(law, samples)}
    if dense_only:
        parts.update(gains=None, limit_gain=None, sopt_multiples=None)
    else:
        parts["gains"] = {
            s: _estimate(float(gain(law, s)), None if samples is None else gains_from_samples(samples, s),
                         ranges.outside(sparsity=s))
            for s in questions.gain_sparsities
        }
        with np.errstate(over="ignore"):
            limit_samples = (None if samples is None
                             else (samples[:, 2] / (samples[:, 0] + samples[:, 2])) ** (-1.0 / samples[:, 3]))
        parts["limit_gain"] = _estimate(_limit_gain(law), limit_samples, ["S"])
        parts["sopt_multiples"] = {
            cost: {s: _estimate(chinchilla_multiple(law, s, COST_ALPHAS[cost]),
                                None if samples is None else _multiples_from_samples(samples, s, COST_ALPHAS[cost]),
                                ranges.outside(sparsity=s))
                   for s in questions.sopt_sparsities}
            for cost in questions.sopt_costs
        }
    predictions = []
    for point in questions.extrapolation:
        s, n, d = point
        drawn = None
        if samples is not None:
            a_s, b_s, c_s, b_n, a_d, b_d, c = samples.T
            with np.errstate(all="ignore"):
                drawn = (a_s * (1 - s) ** b_s + c_s) * n ** -b_n + (a_d / d) ** b_d + c
        predictions.append(((s, n, d), _estimate(float(predict_loss(law, s, n, d)), drawn, ranges.outside(s, n, d))))
    suggestions = _suggestions(fit, fitted, ranges, dense_only, not_pinned)
    summary = _summary(fit, parts, ranges, dense_only, not_pinned, suggestions, unit_d)
    isoflop = None
    if fit.settings.isoflop is not None:
        tolerance, min_sizes = fit.settings.isoflop
        isoflop = isoflop_analysis(table, fit, tolerance, min_sizes, k, fit.settings.seed)
        summary += _isoflop_sentences(isoflop)
    return Findings(ranges=ranges, dense_only=dense_only, predictions=predictions, not_pinned=not_pinned,
                    suggestions=suggestions, summary=summary, isoflop=isoflop, **parts)


def _isoflop_sentences(result: IsoflopResult) -> list[str]:
    def interval(bounds: tuple[float, float] | None) -> str:
        return "" if bounds is None else f" [{bounds[0]:.3g}, {bounds[1]:.3g}]"

    if not result.exponents:
        return ["IsoFLOP analysis: no sparsity has two budgets with enough sizes for a parabola each."]
    listed = "; ".join(f"S = {s:g}: N_opt ~ C^{e.a:.3g}{interval(e.a_interval)}, D_opt ~ C^{e.b:.3g}{interval(e.b_interval)}"
                       f" ({e.budgets} budgets)" for s, e in result.exponents.items())
    return [f"IsoFLOP analysis (approach 2): {listed}. The fitted law implies N_opt ~ C^{result.law_a[0]:.3g}"
            f"{interval(result.law_a[1])} and D_opt ~ C^{result.law_b[0]:.3g}{interval(result.law_b[1])} at every sparsity."]


__all__ = ["Estimate", "Findings", "derive_findings"]
