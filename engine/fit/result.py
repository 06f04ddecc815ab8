"""What a fit produces (`FitResult`) and its fit.json form, plus reading coefficients back.

fit.json (docs/outputs.md): coefficients in paper units at full precision (repr floats), the
objective (mean Huber, Table 7's Error), convergence diagnostics, bootstrap intervals (and the
bootstrap samples themselves, so `engine predict` can give intervals for any query), gains, the
held-out check and provenance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.fit.io import ResultsTable
from engine.fit.law import COEFFICIENT_NAMES, LawCoefficients, Normalisation
from spec.analysis import FitSettings as FitSettingsSpec
from spec.analysis import GainsSettings, OptimalSparsitySettings

# The one source of fit defaults: the spec's `analysis.fit` (spec/analysis.py). `engine fit`'s flags
# and a spec without a `fit:` mapping fit the same way.
SPEC_DEFAULTS = FitSettingsSpec()
SPEC_GAINS, SPEC_SOPT = GainsSettings(), OptimalSparsitySettings()

FIT_JSON_FORMAT = "engine-fit/1"


@dataclass(frozen=True)
class FittedRanges:
    """The span of the fitted runs: anything outside it is an extrapolation."""

    sparsity: tuple[float, float]
    nonzeros: tuple[float, float]
    data: tuple[float, float]

    @classmethod
    def of(cls, table: ResultsTable) -> FittedRanges:
        def span(values: np.ndarray) -> tuple[float, float]:
            return float(values.min()), float(values.max())

        return cls(span(table.sparsity), span(table.nonzeros), span(table.data))

    def outside(self, sparsity: float | None = None, nonzeros: float | None = None,
                data: float | None = None) -> list[str]:
        """Which of the given coordinates lie outside the fitted ranges (with a 1e-9 relative slack)."""
        names = []
        for name, value in (("S", sparsity), ("N", nonzeros), ("D", data)):
            if value is None:
                continue
            low, high = getattr(self, {"S": "sparsity", "N": "nonzeros", "D": "data"}[name])
            if value < low * (1 - 1e-9) - 1e-12 or value > high * (1 + 1e-9) + 1e-12:
                names.append(name)
        return names


@dataclass(frozen=True)
class FitSettings:
    """How to fit; the defaults are the spec's (`analysis.fit`, spec/analysis.py)."""

    huber_delta: float = SPEC_DEFAULTS.huber_delta
    log_loss: bool = SPEC_DEFAULTS.log_loss
    starts: int = SPEC_DEFAULTS.starts
    seed: int = SPEC_DEFAULTS.seed
    bootstrap: int = SPEC_DEFAULTS.bootstrap
    holdout: str = SPEC_DEFAULTS.holdout.kind.replace("_", "-")  # as `--holdout` reads it
    # Dense coefficients (b_N, a_D, b_D, c) frozen at these values: the n:m refit (sec. 4.1).
    freeze_dense: LawCoefficients | None = None
    freeze_dense_source: str | None = None
    columns: dict[str, str] | None = None  # canonical name -> the table's column name
    # What to derive from the law (a spec's analysis.gains, .optimal_sparsity, .extrapolation).
    gain_sparsities: tuple[float, ...] = tuple(SPEC_GAINS.sparsities)
    sopt_costs: tuple[str, ...] = tuple(SPEC_SOPT.costs)
    sopt_sparsities: tuple[float, ...] = tuple(SPEC_SOPT.sparsities)
    extrapolation: tuple[tuple[float, float, float], ...] = ()  # (S, N, D) points to predict
    isoflop: tuple[float, int] | None = None  # (budget tolerance, min sizes): the IsoFLOP analysis, or off

    def free_coefficients(self) -> tuple[str, ...]:
        if self.freeze_dense is None:
            return COEFFICIENT_NAMES
        return ("a_S", "b_S", "c_S")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["freeze_dense"] = None if self.freeze_dense is None else self.freeze_dense.as_dict()
        return out


@dataclass(frozen=True)
class StartRecord:
    objective: float  # mean Huber
    gradient_norm: float
    steps: int
    agrees_with_best: bool


@dataclass(frozen=True)
class Diagnostics:
    verdict: str  # "converged" or "not converged: <reason>"
    best_gradient_norm: float  # of sum(Huber)/delta^2 w.r.t. log-coefficients, at the best point
    agreeing_starts: int
    total_starts: int
    distinct_minima: list[float]  # objective values of the distinct end points, best first
    hessian_eigenvalues: list[float]  # of the scaled objective in log-coefficients, ascending
    flattest_direction: dict[str, float]  # eigenvector of the smallest eigenvalue, by coefficient
    starts: list[StartRecord] = field(default_factory=list)
    bootstrap_unconverged: int = 0

    @property
    def converged(self) -> bool:
        return self.verdict == "converged"


@dataclass(frozen=True)
class HoldoutCheck:
    expression: str
    rows: list[int]  # indices into the table
    coefficients: LawCoefficients  # fitted without the held-out rows
    objective: float
    predicted: list[float]
    measured: list[float]

    @property
    def relative_errors(self) -> np.ndarray:
        return np.asarray(self.predicted) / np.asarray(self.measured) - 1.0

    @property
    def mean_absolute_relative_error(self) -> float:
        return float(np.mean(np.abs(self.relative_errors)))


@dataclass(frozen=True)
class FitResult:
    coefficients: LawCoefficients
    objective: float  # mean Huber at the best point: Table 7's "Error"
    settings: FitSettings
    normalisation: Normalisation
    diagnostics: Diagnostics
    rows_used: int
    fit_mask: list[bool]  # rows of the table used by the fit (from-scratch runs)
    gains: dict[float, float] | None  # None: not estimable (no sparse run was fitted)
    provenance: dict[str, Any]
    bootstrap_samples: np.ndarray | None = None  # (B, 7) paper units
    bootstrap_seconds: float | None = None
    holdout: HoldoutCheck | None = None
    fitted_ranges: FittedRanges | None = None

    def intervals(self) -> dict[str, tuple[float, float]] | None:
        if self.bootstrap_samples is None:
            return None
        low, high = np.nanpercentile(self.bootstrap_samples, (2.5, 97.5), axis=0)
        return {name: (float(low[i]), float(high[i])) for i, name in enumerate(COEFFICIENT_NAMES)}

    def gain_intervals(self) -> dict[float, tuple[float, float]] | None:
        from engine.fit.gains import gain_interval

        if self.bootstrap_samples is None or self.gains is None:
            return None
        return {s: gain_interval(self.bootstrap_samples, s) for s in self.gains}

    def poorly_determined(self) -> dict[str, str]:
        """Coefficients the data cannot pin down, with the reason (empty when all are fine)."""
        reasons: dict[str, str] = {}
        intervals = self.intervals()
        if intervals is not None:
            for name, (low, high) in intervals.items():
                if name not in self.settings.free_coefficients():
                    continue
                if not (low > 0 and np.isfinite(high)) or high / low > 10.0:
                    reasons[name] = f"95% bootstrap interval [{low:.3g}, {high:.3g}] spans more than 10x"
        eigenvalues = self.diagnostics.hessian_eigenvalues
        if eigenvalues and eigenvalues[-1] > 0 and eigenvalues[0] / eigenvalues[-1] < 1e-9:
            for name, weight in self.diagnostics.flattest_direction.items():
                if abs(weight) > 0.3 and name not in reasons:
                    reasons[name] = "lies along a flat direction of the objective (Hessian eigenvalue ratio < 1e-9)"
        return reasons

    def to_json(self) -> dict[str, Any]:
        intervals = self.intervals()
        gain_intervals = self.gain_intervals()
        return {
            "format": FIT_JSON_FORMAT,
            "coefficients": self.coefficients.as_dict(),
            "objective_mean_huber": self.objective,
            "free_coefficients": list(self.settings.free_coefficients()),
            "poorly_determined": self.poorly_determined(),
            "settings": self.settings.to_json(),
            "normalisation": asdict(self.normalisation),
            "rows_used": self.rows_used,
            "fit_mask": self.fit_mask,
            "diagnostics": asdict(self.diagnostics),
            # null where the data cannot estimate them (no sparse run): never a number
            "gains": None if self.gains is None else {str(s): g for s, g in self.gains.items()},
            "gain_intervals": None if gain_intervals is None else {str(s): list(v) for s, v in gain_intervals.items()},
            "bootstrap": None if self.bootstrap_samples is None else {
                "resamples": int(self.bootstrap_samples.shape[0]),
                "seconds": self.bootstrap_seconds,
                "intervals_95": {k: list(v) for k, v in (intervals or {}).items()},
                "samples": self.bootstrap_samples.tolist(),
            },
            "holdout": None if self.holdout is None else {
                "expression": self.holdout.expression,
                "rows": self.holdout.rows,
                "coefficients": self.holdout.coefficients.as_dict(),
                "objective_mean_huber": self.holdout.objective,
                "predicted": self.holdout.predicted,
                "measured": self.holdout.measured,
                "mean_absolute_relative_error": self.holdout.mean_absolute_relative_error,
            },
            "fitted_ranges": None if self.fitted_ranges is None else asdict(self.fitted_ranges),
            "provenance": self.provenance,
        }

    def write(self, path: Path, findings: dict[str, Any] | None = None) -> None:
        """fit.json; `findings` (engine/fit/findings.py) adds what the report states, with intervals."""
        path.parent.mkdir(parents=True, exist_ok=True)
        document = self.to_json() | ({"findings": findings} if findings is not None else {})
        path.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")


@dataclass(frozen=True)
class LoadedCoefficients:
    """Coefficients read by `engine predict`: from a fit.json (maybe with bootstrap samples) or a
    small JSON/YAML file with the seven Table 7 names in paper units."""

    coefficients: LawCoefficients
    samples: np.ndarray | None
    source: str
    fit_json: dict[str, Any] | None


def load_coefficients(path: Path) -> LoadedCoefficients:
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from error
    if path.suffix.lower() in (".yaml", ".yml"):
        from ruamel.yaml import YAML, YAMLError

        try:
            document = YAML(typ="safe", pure=True).load(text)
        except YAMLError as error:
            raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from error
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a mapping with the coefficients {', '.join(COEFFICIENT_NAMES)}")
    mapping = document.get("coefficients", document)
    if not isinstance(mapping, dict):
        raise UserError(f"{path}: 'coefficients' must be a mapping")
    missing = [name for name in COEFFICIENT_NAMES if name not in mapping]
    if missing:
        raise UserError(f"{path}: missing coefficient(s) {', '.join(missing)} (need {', '.join(COEFFICIENT_NAMES)}, paper units)")
    values = {}
    for name in COEFFICIENT_NAMES:
        try:
            values[name] = float(mapping[name])
        except (TypeError, ValueError):
            raise UserError(f"{path}: coefficient {name} is not a number: {mapping[name]!r}") from None
        if not values[name] > 0 or not np.isfinite(values[name]):
            raise UserError(f"{path}: coefficient {name} must be positive and finite, got {mapping[name]!r}")
    samples = None
    bootstrap = document.get("bootstrap") if "coefficients" in document else None
    if isinstance(bootstrap, dict) and bootstrap.get("samples"):
        samples = np.asarray(bootstrap["samples"], np.float64)
    return LoadedCoefficients(
        coefficients=LawCoefficients(**values), samples=samples, source=str(path),
        fit_json=document if "coefficients" in document else None,
    )


def fit_result_from_json(document: dict[str, Any]) -> FitResult:
    """Rebuild a FitResult from fit.json (for `engine report` on an existing fit)."""
    if document.get("format") != FIT_JSON_FORMAT:
        raise UserError(f"not a fit.json of this engine (format {document.get('format')!r})")
    raw_settings = dict(document["settings"])
    frozen = raw_settings.pop("freeze_dense", None)
    for name in ("gain_sparsities", "sopt_costs", "sopt_sparsities"):  # JSON lists back to the tuples FitSettings holds
        if name in raw_settings:
            raw_settings[name] = tuple(raw_settings[name])
    if raw_settings.get("isoflop") is not None:
        raw_settings["isoflop"] = tuple(raw_settings["isoflop"])
    if "extrapolation" in raw_settings:
        raw_settings["extrapolation"] = tuple(tuple(point) for point in raw_settings["extrapolation"])
    settings = FitSettings(**raw_settings, freeze_dense=None if frozen is None else LawCoefficients.from_mapping(frozen))
    raw_diagnostics = dict(document["diagnostics"])
    raw_diagnostics["starts"] = [StartRecord(**record) for record in raw_diagnostics.get("starts", [])]
    holdout = document.get("holdout")
    bootstrap = document.get("bootstrap")
    return FitResult(
        coefficients=LawCoefficients.from_mapping(document["coefficients"]),
        objective=float(document["objective_mean_huber"]),
        settings=settings,
        normalisation=Normalisation(**document["normalisation"]),
        diagnostics=Diagnostics(**raw_diagnostics),
        rows_used=int(document["rows_used"]),
        fit_mask=[bool(v) for v in document["fit_mask"]],
        gains=None if document["gains"] is None else {float(k): float(v) for k, v in document["gains"].items()},
        fitted_ranges=None if not document.get("fitted_ranges") else FittedRanges(
            **{k: tuple(v) for k, v in document["fitted_ranges"].items()}),
        provenance=document.get("provenance", {}),
        bootstrap_samples=None if not bootstrap else np.asarray(bootstrap["samples"], np.float64),
        bootstrap_seconds=None if not bootstrap else bootstrap.get("seconds"),
        holdout=None if not holdout else HoldoutCheck(
            expression=holdout["expression"], rows=[int(r) for r in holdout["rows"]],
            coefficients=LawCoefficients.from_mapping(holdout["coefficients"]),
            objective=float(holdout["objective_mean_huber"]),
            predicted=[float(v) for v in holdout["predicted"]], measured=[float(v) for v in holdout["measured"]],
        ),
    )


def find_fit_json(path: Path) -> Path | None:
    """A fit.json given directly, or in a fit directory, or in a sweep's report/."""
    if path.is_file():
        return path
    return next((p for p in (path / "fit.json", path / "report" / "fit.json") if p.is_file()), None)


def load_fit_with_table(fit_json: Path, columns: dict[str, str] | None = None) -> tuple[FitResult, ResultsTable]:
    """A fit.json and the results table it was fitted to (found through its provenance: as recorded,
    relative to the working directory or to the fit, or the sweep's results.csv beside it), read
    with the fit's column map plus `columns` (`--columns`; one that contradicts the fit's is an error)."""
    from engine.fit.io import read_table

    try:
        document = json.loads(fit_json.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{fit_json}: not valid JSON ({error.msg})") from error
    except OSError as error:
        raise UserError(f"{fit_json}: cannot read ({error.strerror or error})") from error
    source = Path(document.get("provenance", {}).get("data_source", ""))
    sweep_results = fit_json.parent.parent / "results.csv"  # <sweep>/report/fit.json
    candidates = [source, sweep_results] if source.is_absolute() else [
        Path.cwd() / source, fit_json.parent / source, fit_json.parent / "results.csv", sweep_results]
    results = next((p for p in candidates if p.is_file()), None)
    if results is None:
        raise UserError(f"{fit_json}: its results table {source} is not found")
    fitted = document.get("settings", {}).get("columns") or {}
    for canonical, source_column in (columns or {}).items():
        if fitted.get(canonical, source_column) != source_column:
            raise UserError(f"--columns: {canonical}={source_column}, but {fit_json} was fitted with "
                            f"{canonical}={fitted[canonical]}", exit_code=2)
    table = read_table(results, {**fitted, **(columns or {})})
    return fit_result_from_json(document), table
