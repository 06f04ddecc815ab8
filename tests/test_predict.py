"""`engine predict` on published coefficients (YAML/JSON) and on a fit.json with a bootstrap."""

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.fit import paper
from engine.fit.law import predict_loss
from engine.fit.sopt import optimal_sparsity
from engine.planning.costs import pruning_cost_alpha

T5_YAML = "a_S: 16.8\nb_S: 0.722\nc_S: 4.50e1\nb_N: 0.245\na_D: 6.90e8\nb_D: 0.203\nc: 0.651\n"


def test_predict_from_published_yaml(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t5.yaml"
    path.write_text(T5_YAML)  # 4.50e1 is a float in YAML 1.2 (ruamel), not a string
    assert main(["predict", str(path), "--at", "0.75,6.04e8,3.28e10", "--sopt", "1e8,1e20",
                 "--flops-per-param", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["at"][0]["loss"] == pytest.approx(float(predict_loss(paper.T5_C4, 0.75, 6.04e8, 3.28e10)))
    assert "loss_interval_95" not in out["at"][0]
    expected = float(optimal_sparsity(paper.T5_C4, 1e8, 1e20, 3.0, pruning_cost_alpha()))
    assert out["sopt"][0]["s_opt_sparse_costs"] == pytest.approx(expected)
    assert out["sopt"][0]["s_opt_dense_costs"] < out["sopt"][0]["s_opt_sparse_costs"]


def test_predict_errors(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"a_S": 1.0}))
    assert main(["predict", str(path), "--at", "0.5,1e6,1e9"]) != 0
    assert "missing coefficient(s) b_S" in capsys.readouterr().err
    path.write_text(json.dumps({**paper.T5_C4.as_dict(), "b_N": -0.2}))
    assert main(["predict", str(path), "--at", "0.5,1e6,1e9"]) != 0
    assert "must be positive" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(paper.T5_C4.as_dict()))
    assert main(["predict", str(good), "--at", "0.5,1e6"]) == 2
    assert "expected 3 comma-separated numbers" in capsys.readouterr().err
    assert main(["predict", str(good), "--at", "1.5,1e6,1e9"]) == 2


def test_predict_intervals_from_a_bootstrapped_fit(tmp_path: Path, capsys) -> None:
    from engine.fit import FitSettings, fit_law, read_table

    table = read_table(Path(__file__).resolve().parent / "fixtures" / "results" / "synthetic.jsonl")
    fit = fit_law(table, FitSettings(huber_delta=1e-3, log_loss=True, bootstrap=30, holdout="none"))
    fit.write(tmp_path / "fit.json")
    assert main(["predict", str(tmp_path / "fit.json"), "--at", "0.5,1e8,1e10", "--sopt", "1e8,1e20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    low, high = out["at"][0]["loss_interval_95"]
    assert low <= out["at"][0]["loss"] <= high and low < high
    assert len(out["sopt"][0]["s_opt_sparse_costs_interval_95"]) == 2
