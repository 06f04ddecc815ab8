"""The section-4 analyses on tables made from known laws: the n:m refit recovers the sparsity
term with the dense part frozen (Table 3), and Table 4's data equivalence is what the report says."""

from __future__ import annotations

import numpy as np
import pytest

from engine.fit import paper
from engine.fit.gains import gain
from engine.fit.io import table_from_arrays
from engine.fit.law import predict_loss
from engine.fit.pretrained import data_equivalence
from engine.fit.result import FitSettings
from engine.report import write_blocks
from engine.report.blocks import Table
from engine.report.studies import nm_refit_blocks, pretrained_vs_scratch_blocks
from engine.study.analysis import nm_refit_groups

DENSE = paper.T5_C4
# n:m laws agree with the dense law at S = 0 (a_S + c_S = 61.8, T5's): S = 0 has no pattern.
TRUE_NM = {"4": DENSE.replace(a_S=20.0, b_S=1.5, c_S=41.8), "8": DENSE.replace(a_S=40.0, b_S=0.9, c_S=21.8)}
GRID = [(n, 1e9) for n in (2e7, 5e7, 1.2e8, 3e8)] + [(2e7, 4e9), (2e7, 1.6e10)]
PATTERNS = {"2:4": 0.5, "1:4": 0.75, "4:8": 0.5, "2:8": 0.75}


def _nm_table(patterns: dict[str, float] = PATTERNS):
    rows = {"sparsity": [], "nonzeros": [], "data": [], "loss": [], "pattern": []}
    for pattern, s in patterns.items():
        law = TRUE_NM[pattern.split(":")[1]] if ":" in pattern else DENSE
        for n, d in GRID:
            rows["sparsity"].append(s), rows["nonzeros"].append(n), rows["data"].append(d)
            rows["loss"].append(float(predict_loss(law, np.array(s), np.array(n), np.array(d))))
            rows["pattern"].append(pattern)
    arrays = {k: np.array(v) for k, v in rows.items() if k != "pattern"}
    extra = {"pattern": rows["pattern"], "init": ["scratch"] * len(rows["loss"])}
    return table_from_arrays(arrays["sparsity"], arrays["nonzeros"], arrays["data"], arrays["loss"], extra)


def test_nm_refit_recovers_the_sparsity_term_per_group_with_dense_frozen(tmp_path) -> None:
    settings = FitSettings(huber_delta=1e-3, log_loss=True, starts=8, bootstrap=20, holdout="none")
    dense_runs = _nm_table({"unstructured": 0.0})
    groups = nm_refit_groups(_nm_table(), DENSE, "dense.json", settings, dense_runs)
    assert [g.label for g in groups] == ["n:4", "n:8"]
    assert [g.patterns for g in groups] == [("2:4", "1:4"), ("4:8", "2:8")]
    for group in groups:
        truth, fitted = TRUE_NM[group.label[-1]], group.fit.coefficients
        for name in ("b_N", "a_D", "b_D", "c"):  # frozen (to the last bit of a log round trip)
            assert getattr(fitted, name) == pytest.approx(getattr(DENSE, name), rel=1e-12)
        for s in (0.5, 0.75):  # the gains are what the true n:m law gives
            assert float(gain(fitted, s)) == pytest.approx(float(gain(truth, s)), rel=1e-3)
    blocks = nm_refit_blocks(groups, DENSE, "dense.json")
    gains_table = next(b for b in blocks if isinstance(b, Table))
    assert gains_table.rows[0][:3] == ["n:4", "2:4, 1:4", "12 + 6 dense"]
    assert gains_table.rows[0][3].startswith(f"{float(gain(TRUE_NM['4'], 0.5)):.2f}x")
    assert gains_table.rows[1][-1] == "1.67x / 1.81x"  # the paper's Table 3 beside ours
    assert "Caution" not in " ".join(getattr(b, "text", "") for b in blocks)
    html = write_blocks(tmp_path, blocks, "n:m").read_text()
    assert "Table 3" in html and (tmp_path / "figures" / "nm_loss_vs_nonzeros.png").stat().st_size > 1000


def test_nm_refit_without_dense_runs_says_the_gains_are_weak() -> None:
    settings = FitSettings(huber_delta=1e-3, log_loss=True, starts=4, bootstrap=0, holdout="none")
    groups = nm_refit_groups(_nm_table({"2:4": 0.5, "1:4": 0.75}), DENSE, "dense.json", settings)
    assert groups[0].dense_runs == 0
    assert "Caution: no dense" in " ".join(getattr(b, "text", "") for b in nm_refit_blocks(groups, DENSE, "x"))


def test_nm_refit_needs_nm_rows() -> None:
    table = _nm_table()
    table.extra["pattern"] = ["unstructured"] * len(table)
    with pytest.raises(Exception, match="no n:m runs"):
        nm_refit_groups(table, DENSE, "dense.json", FitSettings(holdout="none"))


def test_pretrained_vs_scratch_table_is_the_data_equivalence() -> None:
    law = paper.VIT_JFT
    sparsity = np.array([0.5, 0.75, 0.5])
    nonzeros = np.array([1e7, 5e6, 4e7])
    prune_data = np.array([2e8, 2e8, 2e8])
    pretrain = prune_data / paper.TABLE_4_PRUNE_FRACTION
    # losses reached by a from-scratch run with 3x, 5x and 0.5x the pruning data
    loss = predict_loss(law, sparsity, nonzeros, prune_data * np.array([3.0, 5.0, 0.5]))
    extra = {"init": ["pretrained"] * 3, "pretrain_data": list(pretrain), "d_model": [384, 384, 768]}
    table = table_from_arrays(sparsity, nonzeros, prune_data, loss, extra)
    blocks = pretrained_vs_scratch_blocks(law, "vit.json", table)
    layout, _, detail = [b for b in blocks if isinstance(b, Table)]
    expected = [data_equivalence(law, s, n, value, d, p)
                for s, n, value, d, p in zip(sparsity, nonzeros, loss, prune_data, pretrain, strict=True)]
    assert [e.excluding_pretraining for e in expected] == pytest.approx([3.0, 5.0, 0.5], rel=1e-6)
    assert [row[-2] for row in detail.rows] == ["3x", "5x", "0.5x"]
    assert detail.rows[0][-1] == f"{expected[0].including_pretraining:.3g}x"
    assert layout.rows[0] == ["d_model 384", "3x / 0.159x", "5x / 0.265x"]  # inc. = exc. / (1 / 0.056 + 1)


def test_pretrained_rows_without_pretrain_data_are_named_and_the_rest_kept() -> None:
    table = table_from_arrays(np.array([0.5, 0.5, 0.0]), np.array([1e7, 2e7, 2e7]), np.array([1e8] * 3),
                              np.array([3.0, 2.9, 2.8]),
                              {"init": ["pretrained", "pretrained", "scratch"], "pretrain_data": ["", 2e9, ""],
                               "run_id": ["a1", "b2", "c3"]})
    blocks = pretrained_vs_scratch_blocks(paper.VIT_JFT, "x", table)
    text = " ".join(getattr(b, "text", "") for b in blocks)
    assert "1 pretrained run(s) have no `pretrain_data`" in text and "a1" in text
    detail = [b for b in blocks if isinstance(b, Table)][-1]
    assert len(detail.rows) == 1 and detail.rows[0][5] == "2e+09"  # the run with its D, the scratch row not at all
    only_unknown = table.select(np.array([True, False, False]))
    text = " ".join(getattr(b, "text", "") for b in pretrained_vs_scratch_blocks(paper.VIT_JFT, "x", only_unknown))
    assert "cannot be computed" in text


def test_pretrain_data_missing_from_results_is_taken_from_the_plan() -> None:
    from types import SimpleNamespace

    from engine.study.analysis import with_pretrain_data

    table = table_from_arrays(np.array([0.5, 0.0]), np.array([1e7, 2e7]), np.array([1e8, 1e8]), np.array([3.0, 2.9]),
                              {"init": ["pretrained", "scratch"], "run_id": ["a1", "b2"]})
    runs = [SimpleNamespace(run_id="a1", source=SimpleNamespace(data=5e9)), SimpleNamespace(run_id="b2", source=None)]
    assert with_pretrain_data(table, runs).numeric_column("pretrain_data") is None  # the scratch row stays blank
    assert with_pretrain_data(table, runs).extra["pretrain_data"] == [5e9, ""]
