"""The IsoFLOP analysis (approach 2) recovers the exponents of a known law, per sparsity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.fit import FitSettings, fit_law, paper, table_from_arrays
from engine.fit.isoflop import budget_groups, isoflop_analysis, parabola_minimum
from engine.fit.law import predict_loss

BUDGETS = tuple(np.geomspace(1e17, 1e20, 6))


def isoflop_table(law, sparsities=(0.0, 0.5), budgets=BUDGETS, sizes=13, noise=0.002, seed=0):  # noqa: ANN001
    """Per sparsity and budget N x D = C / 6, sizes spread 1/8..8 around the law's optimum."""
    rng = np.random.default_rng(seed)
    s_all, n_all, d_all = [], [], []
    for s in sparsities:
        for budget in budgets:
            product = budget / 6
            grid = np.geomspace(1e4, 1e10, 4001)  # the law's optimum for this budget, by brute force
            best = grid[np.argmin(predict_loss(law, s, grid, product / grid))]
            n = best * np.geomspace(1 / 8, 8, sizes)
            s_all += [s] * sizes
            n_all += list(n)
            d_all += list(product / n)
    s_all, n_all, d_all = map(np.array, (s_all, n_all, d_all))
    loss = predict_loss(law, s_all, n_all, d_all) * (1 + noise * rng.standard_normal(len(s_all)))
    return table_from_arrays(s_all, n_all, d_all, loss)


def test_parabola_minimum_and_budget_groups() -> None:
    x = np.linspace(-2, 2, 9)
    assert parabola_minimum(x, 3 * (x - 0.7) ** 2 + 1) == pytest.approx(0.7)
    assert parabola_minimum(x, -(x**2)) is None  # opens downwards: no minimum
    groups = budget_groups(np.array([1e18, 1.01e18, 3e18, 2.99e18, 1e19]), tolerance=0.02)
    assert list(groups) == [0, 0, 1, 1, 2]


def test_isoflop_recovers_the_exponents_of_a_known_law_per_sparsity() -> None:
    law = paper.T5_C4
    expected_a = law.b_D / (law.b_N + law.b_D)
    table = isoflop_table(law)
    result = isoflop_analysis(table, fit=None, tolerance=0.02, min_sizes=3)
    assert set(result.exponents) == {0.0, 0.5}
    for s, exponents in result.exponents.items():
        assert exponents.budgets == 6
        assert exponents.a == pytest.approx(expected_a, abs=0.02), s
        assert exponents.a + exponents.b == pytest.approx(1.0, abs=1e-9)  # D_opt = (N D) / N_opt
        low, high = exponents.a_interval
        assert low < exponents.a < high and high - low < 0.05
    assert all(o.inside for o in result.optima)


def test_the_law_implied_exponents_come_with_intervals_and_the_report_shows_both(tmp_path: Path, capsys) -> None:
    table = isoflop_table(paper.T5_C4, sparsities=(0.0,))
    fit = fit_law(table, FitSettings(bootstrap=100, isoflop=(0.02, 3)))
    result = isoflop_analysis(table, fit)
    assert result.law_a[0] == pytest.approx(fit.coefficients.b_D / (fit.coefficients.b_N + fit.coefficients.b_D))
    assert result.law_a[1] is not None

    csv = tmp_path / "iso.csv"
    csv.write_text("sparsity,nonzeros,data,loss\n" + "\n".join(
        f"{s},{n},{d},{v}" for s, n, d, v in zip(table.sparsity, table.nonzeros, table.data, table.loss, strict=True)))
    assert main(["fit", str(csv), "--isoflop", "--bootstrap", "50", "--out", str(tmp_path / "fit")]) == 0
    capsys.readouterr()
    findings = json.loads((tmp_path / "fit" / "fit.json").read_text())["findings"]
    assert findings["isoflop"]["exponents"]["0.0"]["budgets"] == 6
    report = (tmp_path / "fit" / "index.md").read_text()
    assert "## IsoFLOP analysis" in report and "eq. 3 law (every S)" in report
    assert (tmp_path / "fit" / "figures" / "isoflop.png").is_file()
