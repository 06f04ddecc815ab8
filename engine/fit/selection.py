"""Which runs to hold out of a fit: `--holdout EXPR`.

EXPR is one of
  largest-nonzeros    the runs at the largest N (the default: an extrapolation check in N, as in
                      the paper's T5-XL check; engine.fit.result.FitSettings),
  none                no held-out check,
  COND[,COND...]      runs meeting every condition, COND = COLUMN OP NUMBER with OP one of
                      <, <=, >, >=, ==, != (e.g. "nonzeros>=5e7", "sparsity==0.875,data>3e10").
Nothing is evaluated as code.
"""

from __future__ import annotations

import operator
import re

import numpy as np

from engine.errors import UserError
from engine.fit.io import ResultsTable

_OPERATORS = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*$")


def holdout_mask(table: ResultsTable, expression: str | None) -> np.ndarray:
    """Boolean mask of held-out rows (all False for 'none')."""
    expression = (expression or "none").strip()
    if expression == "none":
        return np.zeros(len(table), bool)
    if expression == "largest-nonzeros":
        return table.nonzeros == table.nonzeros.max()
    mask = np.ones(len(table), bool)
    for condition in expression.split(","):
        match = _CONDITION.match(condition)
        if not match:
            raise UserError(
                f"--holdout: cannot read {condition.strip()!r}; expected COLUMN OP NUMBER "
                "(e.g. nonzeros>=5e7), 'largest-nonzeros' or 'none'", exit_code=2,
            )
        name, op, number = match.groups()
        try:
            column = table.column(name)
        except KeyError:
            raise UserError(f"--holdout: no column {name!r} in the results table", exit_code=2) from None
        values = np.asarray(column, np.float64) if isinstance(column, np.ndarray) else table.numeric_column(name)
        if values is None:
            raise UserError(f"--holdout: column {name!r} is not numeric", exit_code=2)
        mask &= _OPERATORS[op](values, float(number))
    return mask
