"""`engine report` from a fit directory and from a sweep directory; the report's contents."""

import shutil
from pathlib import Path

from engine.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_report_from_a_sweep_directory_fits_with_defaults(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "runs" / "sweep"
    run_dir.mkdir(parents=True)
    text = (REPO / "tests" / "fixtures" / "results" / "synthetic.csv").read_text().replace("val-loss", "loss")
    (run_dir / "results.csv").write_text(text)
    assert main(["report", str(run_dir)]) == 0
    report = run_dir / "report"
    for name in ("index.md", "index.html", "fit.json"):
        assert (report / name).is_file()
    markdown = (report / "index.md").read_text()
    for section in ("Coefficients (Table 7 form", "Sparsity gains (Table 2 form", "Convergence diagnostics",
                    "Held-out check", "Optimal sparsity"):
        assert section in markdown
    assert "Comparison with the paper" not in markdown  # not the paper's data
    # This synthetic law is pinned: no coefficient is shown in parentheses, nor told to be read so.
    assert "not pinned down" not in markdown and "Values in parentheses" not in markdown
    assert len(list((report / "figures").glob("*.png"))) == 6


def test_report_on_the_paper_t5_data_compares_with_table_7(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t5.csv"
    shutil.copy(REPO / "experiments" / "data" / "t5_c4_paper.csv", data)
    out = tmp_path / "fit"
    assert main(["fit", str(data), "--huber-delta", "1e-3", "--log-loss", "--bootstrap", "10", "--out", str(out)]) == 0
    (out / "index.md").unlink()
    assert main(["report", str(out)]) == 0  # re-render from fit.json
    markdown = (out / "index.md").read_text()
    assert "Comparison with the paper" in markdown and "7.6e-06 (printed)" in markdown
    assert "not pinned down" in markdown and "Values in parentheses are the best fit's" in markdown
    assert "1.59, 2.16, 2.63" in markdown


def test_report_errors(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nope")]) != 0
    assert main(["report", str(tmp_path)]) != 0
    assert "neither fit.json nor results.csv" in capsys.readouterr().err
