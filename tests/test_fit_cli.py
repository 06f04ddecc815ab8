"""`engine fit`: one clear error per bad input, and the happy path writes fit.json + report."""

import json
from pathlib import Path

import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_CSV = REPO / "tests" / "fixtures" / "results" / "synthetic.csv"
SYNTHETIC_JSONL = REPO / "tests" / "fixtures" / "results" / "synthetic.jsonl"
GOOD_HEADER = "sparsity,nonzeros,data,loss\n"
GOOD_ROW = "0.5,1e6,1e9,2.5\n"


def _run_error(argv: list[str], capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "content,expected",
    [
        ("sparsity,nonzeros,loss\n0.5,1e6,2.5\n", "missing column(s) data"),
        (GOOD_HEADER + "0.5,1e6,lots,2.5\n", "not a number: 'lots'"),
        (GOOD_HEADER + "1.0,1e6,1e9,2.5\n", "sparsity must be in [0, 1)"),
        (GOOD_HEADER + "-0.1,1e6,1e9,2.5\n", "sparsity must be in [0, 1)"),
        (GOOD_HEADER + "0.5,0,1e9,2.5\n", "nonzeros ('nonzeros') must be positive"),
        (GOOD_HEADER + "0.5,1e6,-1e9,2.5\n", "data ('data') must be positive"),
        (GOOD_HEADER + "0.5,1e6,1e9,0\n", "loss ('loss') must be positive"),
        (GOOD_HEADER + GOOD_ROW * 7, "too few runs for the fit: 7 from-scratch row(s) for 7 free coefficients"),
        (GOOD_HEADER, "no rows"),
    ],
)
def test_bad_tables_give_one_clear_error(tmp_path: Path, capsys, content: str, expected: str) -> None:
    path = tmp_path / "results.csv"
    path.write_text(content)
    message = _run_error(["fit", str(path), "--out", str(tmp_path / "out")], capsys)
    assert expected in message
    assert not (tmp_path / "out" / "fit.json").exists()


def test_row_number_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.csv"
    path.write_text(GOOD_HEADER + GOOD_ROW + "0.5,1e6,1e9,nan-ish\n")
    assert f"{path}:3:" in _run_error(["fit", str(path)], capsys)


def test_unreadable_and_malformed_files(tmp_path: Path, capsys) -> None:
    assert "cannot read" in _run_error(["fit", str(tmp_path / "missing.csv")], capsys)
    assert "cannot read" in _run_error(["fit", str(tmp_path)], capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sparsity": 0.5}\n{oops\n')
    assert f"{bad}:2: not valid JSON" in _run_error(["fit", str(bad)], capsys)


def test_column_mapping_errors(capsys) -> None:
    assert "missing column(s) loss" in _run_error(["fit", str(SYNTHETIC_CSV)], capsys)
    assert "not a canonical column" in _run_error(["fit", str(SYNTHETIC_CSV), "--columns", "lss=val-loss"], capsys)
    assert "expected CANONICAL=SOURCE" in _run_error(["fit", str(SYNTHETIC_CSV), "--columns", "loss"], capsys)
    assert "--holdout: cannot read" in _run_error(
        ["fit", str(SYNTHETIC_CSV), "--columns", "loss=val-loss", "--holdout", "nonzeros~3"], capsys)


def test_fit_writes_fit_json_and_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fit"
    code = main(["fit", str(SYNTHETIC_CSV), "--columns", "loss=val-loss", "--huber-delta", "1e-3", "--log-loss",
                 "--bootstrap", "20", "--holdout", "nonzeros>=6e7", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "objective (mean Huber)" in printed and "starts agree" in printed
    document = json.loads((out / "fit.json").read_text())
    assert set(document["coefficients"]) == {"a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c"}
    assert document["diagnostics"]["verdict"] == "converged"
    assert document["bootstrap"]["resamples"] == 20
    assert document["holdout"]["rows"] and document["settings"]["columns"] == {"loss": "val-loss"}
    assert (out / "index.html").read_text().count("data:image/png;base64,") == 6
    # The synthetic data came from a_S=30, b_N=0.3 with 0.1% noise.
    assert document["coefficients"]["b_N"] == pytest.approx(0.3, rel=0.05)


def test_jsonl_input(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fit"
    assert main(["fit", str(SYNTHETIC_JSONL), "--bootstrap", "0", "--starts", "8", "--no-report", "--out", str(out)]) == 0
    assert json.loads((out / "fit.json").read_text())["rows_used"] == 36


def test_fit_flags_default_to_the_spec_fit_settings() -> None:
    """One source of fit defaults: `engine fit` without flags fits as a spec without `fit:` does."""
    from engine.cli import build_parser
    from spec.analysis import FitSettings as FitSettingsSpec

    spec = FitSettingsSpec()
    args = build_parser().parse_args(["fit", "results.csv"])
    assert (args.huber_delta, args.log_loss, args.starts, args.seed, args.bootstrap) == (
        spec.huber_delta, spec.log_loss, spec.starts, spec.seed, spec.bootstrap)
    assert args.holdout == spec.holdout.kind.replace("_", "-")
    assert build_parser().parse_args(["fit", "results.csv", "--no-log-loss"]).log_loss is False


def test_repeated_columns_merge_and_conflicts_are_errors(tmp_path: Path, capsys) -> None:
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(SYNTHETIC_CSV.read_text().replace("nonzeros", "params", 1))
    out = tmp_path / "fit"
    code = main(["fit", str(renamed), "--columns", "loss=val-loss", "--columns", "nonzeros=params", "--starts", "2",
                 "--bootstrap", "0", "--no-report", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    assert json.loads((out / "fit.json").read_text())["settings"]["columns"] == {"loss": "val-loss", "nonzeros": "params"}
    capsys.readouterr()
    message = _run_error(["fit", str(renamed), "--columns", "loss=val-loss", "--columns", "loss=other"], capsys)
    assert message.strip() == "error: --columns: loss is mapped to both 'val-loss' and 'other'"
    assert "mapped to both" in _run_error(["fit", str(renamed), "--columns", "loss=val-loss,loss=x"], capsys)
    # `engine report` of that fit: --columns must agree with the columns the fit read.
    assert _run_error(["report", str(out), "--columns", "loss=other"], capsys) == (
        f"error: --columns: loss=other, but {out / 'fit.json'} was fitted with loss=val-loss")
