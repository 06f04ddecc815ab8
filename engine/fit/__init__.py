"""Fitting the sparse scaling law and the analyses built on it (paper sec. 3-4, appendices C-D).

Public API (what `engine fit/predict/report` and the training loop use):
    read_table(path, columns) -> ResultsTable         io.py
    table_from_arrays(S, N, D, L, extra) -> ResultsTable
    fit_law(table, FitSettings(...)) -> FitResult        fitting.py
    FitResult.to_json() / .write(path)                   result.py
    load_coefficients(path) -> LoadedCoefficients        (fit.json or a small JSON/YAML)
    LawCoefficients, predict_loss                        law.py (eq. 3)
    gain                                                 gains.py (eq. 7)
    optimal_sparsity, chinchilla_nonzeros, chinchilla_multiple, contour_compute   sopt.py
    data_equivalence                                     pretrained.py (Table 4)
"""

from engine.fit.fitting import fit_law, objective_at
from engine.fit.gains import gain
from engine.fit.io import ResultsTable, read_table, table_from_arrays
from engine.fit.law import LawCoefficients, predict_loss
from engine.fit.pretrained import data_equivalence
from engine.fit.result import FitResult, FitSettings, LoadedCoefficients, load_coefficients
from engine.fit.sopt import chinchilla_multiple, chinchilla_nonzeros, contour_compute, optimal_sparsity

__all__ = [
    "FitResult", "FitSettings", "LawCoefficients", "LoadedCoefficients", "ResultsTable",
    "chinchilla_multiple", "chinchilla_nonzeros", "contour_compute", "data_equivalence",
    "fit_law", "gain", "load_coefficients", "objective_at", "optimal_sparsity", "predict_loss",
    "read_table", "table_from_arrays",
]
