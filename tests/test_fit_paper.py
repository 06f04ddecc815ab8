"""The paper's numbers: the canonical T5 data, Table 2, Table 3 and the section 3.3 statements,
computed from Table 7's coefficients by the engine's own code."""

from pathlib import Path

import numpy as np
import pytest

from engine.fit import paper
from engine.fit.gains import gain
from engine.fit.io import read_table
from engine.fit.sopt import chinchilla_data, chinchilla_multiple, optimal_sparsity
from engine.planning.costs import DENSE_COST_ALPHA, pruning_cost_alpha

REPO = Path(__file__).resolve().parents[1]
RAW_T5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "t5-data.csv"
CANONICAL_T5 = REPO / "experiments" / "data" / "t5_c4_paper.csv"


@pytest.mark.skipif(not RAW_T5.is_file(), reason="the paper's raw T5 CSV is not next to the repository")
def test_canonical_t5_copy_rebuilds_from_the_raw_csv(tmp_path: Path) -> None:
    rebuilt = tmp_path / "t5.csv"
    paper.write_canonical_csv(paper.canonical_t5_rows(RAW_T5), rebuilt)
    assert rebuilt.read_text() == CANONICAL_T5.read_text()


def test_canonical_t5_units_and_fingerprint() -> None:
    table = read_table(CANONICAL_T5)
    assert len(table) == 48
    steps = table.numeric_column("steps")
    assert np.allclose(table.data, steps * 65_536)
    # N is the same for every sparsity at one model size: 24 x 12 x 768^2 x scale x (1 - S).
    assert set(np.unique(table.nonzeros)) == {24 * 12 * 768**2 * x for x in (0.0078125, 0.03125, 0.125, 0.5)}
    assert paper.dataset_fingerprint(table.sparsity, table.nonzeros, table.data, table.loss) == paper.T5_C4_FINGERPRINT


@pytest.mark.parametrize("family,law", [("vit_jft", paper.VIT_JFT), ("t5_c4", paper.T5_C4)])
def test_gains_reproduce_table_2(family: str, law) -> None:
    for s, published in zip(paper.TABLE_2_SPARSITIES, paper.TABLE_2[family], strict=True):
        assert round(float(gain(law, s)), 2) == pytest.approx(published, abs=0.0101)


def test_nm_row_reproduces_table_3_n8() -> None:
    # Table 7's n:m coefficients are rounded to 3 digits; Table 3 to 2.
    assert float(gain(paper.T5_C4_NM, 0.5)) == pytest.approx(paper.TABLE_3["n:8"][0], abs=0.01)
    assert float(gain(paper.T5_C4_NM, 0.75)) == pytest.approx(paper.TABLE_3["n:8"][1], abs=0.02)


@pytest.mark.parametrize("family,law", [("vit_jft", paper.VIT_JFT), ("t5_c4", paper.T5_C4)])
def test_section_3_3_statements(family: str, law) -> None:
    claims = paper.SECTION_3_3_FIFTY_PERCENT[family]
    sparse = chinchilla_multiple(law, 0.5, pruning_cost_alpha())
    dense = chinchilla_multiple(law, 0.5, DENSE_COST_ALPHA)
    assert 1.0 < sparse < claims["sparse_costs_below"]
    assert dense == pytest.approx(claims["dense_costs_about"], rel=0.1)
    # Cross-check the definition: at C = multiple x k N D_chin(N), S_opt is exactly 0.5, for any N.
    k = 3.0
    for n in (1e7, 1e9):
        for multiple, alpha in ((sparse, pruning_cost_alpha()), (dense, DENSE_COST_ALPHA)):
            compute = multiple * k * n * chinchilla_data(law, n)
            assert float(optimal_sparsity(law, n, compute, k, alpha)) == pytest.approx(0.5, abs=1e-9)
