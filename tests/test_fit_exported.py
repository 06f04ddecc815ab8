"""The batched solver exported once per machine (engine/fit/exported.py): the same numbers as the
traced solver, read back from disk by a later process, and a damaged file is only re-exported."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from engine.fit import exported, multistart
from engine.fit.law import LawCoefficients, Normalisation, predict_loss
from engine.fit.objective import make_fit_data

TRUE = LawCoefficients(a_S=2.0, b_S=1.0, c_S=3.0, b_N=0.4, a_D=2e5, b_D=0.5, c=1.5)


def _solve(directory: Path | None, monkeypatch: pytest.MonkeyPatch) -> multistart.BatchSolution:
    monkeypatch.setattr(multistart, "exported_solver_directory", lambda: directory)
    rng = np.random.default_rng(0)
    sparsity = np.repeat([0.0, 0.5, 0.75], 8)
    nonzeros = np.tile(np.geomspace(1e5, 1e7, 8), 3)
    data = np.full(24, 1e8)
    loss = predict_loss(TRUE, sparsity, nonzeros, data)
    norm = Normalisation.for_data(nonzeros, data)
    with jax.enable_x64(True):
        fit_data = make_fit_data(sparsity, nonzeros, data, loss, norm)
        starts = multistart.random_starts(rng, 4, loss)
        return multistart.solve_batch(starts, np.ones((4, 24)), fit_data, delta=1e-3, log_loss=True)


def test_exported_solver_gives_the_traced_solvers_numbers(tmp_path: Path, monkeypatch) -> None:
    traced = _solve(None, monkeypatch)
    first = _solve(tmp_path, monkeypatch)
    files = list(tmp_path.glob("solver-*.jax-export"))
    assert len(files) == 1
    exported._loaded.clear()  # what a new process sees: only the file
    second = _solve(tmp_path, monkeypatch)
    for field in multistart.BatchSolution._fields:
        np.testing.assert_array_equal(getattr(first, field), getattr(traced, field))
        np.testing.assert_array_equal(getattr(second, field), getattr(traced, field))


def test_damaged_exported_solver_is_exported_again(tmp_path: Path, monkeypatch) -> None:
    reference = _solve(tmp_path, monkeypatch)
    (path,) = tmp_path.glob("solver-*.jax-export")
    path.write_bytes(path.read_bytes()[:100])
    exported._loaded.clear()
    again = _solve(tmp_path, monkeypatch)
    np.testing.assert_array_equal(again.theta, reference.theta)
    assert exported._read(path) is not None  # written whole again
