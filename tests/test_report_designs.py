"""Reports for any design: IsoFLOP and dense-only tables, scattered (non-grid) designs, hundreds of
rows; figures of bounded size; extrapolation marked; intervals on S_opt; the summary first."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.fit import FitSettings, fit_law, paper, table_from_arrays
from engine.fit.findings import derive_findings
from engine.fit.law import predict_loss
from engine.report import write_report

MAX_FIGURE_PIXELS = 2000  # per side: a figure that grows with the number of distinct values fails
MAX_FIGURE_BYTES = 400_000


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def _write_csv(path: Path, sparsity, nonzeros, data, loss) -> Path:  # noqa: ANN001 - arrays
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sparsity", "nonzeros", "data", "loss"])
        writer.writerows(zip(sparsity, nonzeros, data, loss, strict=True))
    return path


def isoflop_dense_table(path: Path) -> Path:
    """250 dense runs, 10 compute budgets x 25 sizes, every run its own D (Chinchilla's approach 2)
    from Hoffmann et al.'s law as Epoch refitted it, with 0.5% noise."""
    rng = np.random.default_rng(0)
    budgets = np.repeat(np.geomspace(6e18, 3e21, 10), 25)
    nonzeros = np.tile(np.geomspace(4e7, 3e9, 25), 10)
    data = budgets / (6 * nonzeros)
    loss = 1.82 + 482.0 / nonzeros**0.3478 + 2085.0 / data**0.3658
    return _write_csv(path, np.zeros(250), nonzeros, data, loss * (1 + 0.005 * rng.standard_normal(250)))


def scattered_sparse_table(rows: int = 150, max_sparsity: float = 0.75, seed: int = 1):
    """Runs at random (S, N, D), no grid, from the paper's T5 law with 0.3% noise."""
    rng = np.random.default_rng(seed)
    sparsity = np.round(rng.uniform(0.0, max_sparsity, rows), 3)
    nonzeros = np.exp(rng.uniform(np.log(1e6), np.log(1e8), rows))
    data = np.exp(rng.uniform(np.log(1e10), np.log(1e11), rows))
    loss = predict_loss(paper.T5_C4, sparsity, nonzeros, data) * (1 + 0.003 * rng.standard_normal(rows))
    return table_from_arrays(sparsity, nonzeros, data, loss)


def _check_figures(report_dir: Path) -> None:
    pngs = sorted((report_dir / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        width, height = _png_size(png)
        assert width <= MAX_FIGURE_PIXELS and height <= MAX_FIGURE_PIXELS, (png.name, width, height)
        assert png.stat().st_size <= MAX_FIGURE_BYTES, (png.name, png.stat().st_size)


def test_dense_only_isoflop_table_gives_the_chinchilla_form_and_claims_no_gains(tmp_path: Path, capsys) -> None:
    table = isoflop_dense_table(tmp_path / "isoflop.csv")
    out = tmp_path / "fit"
    assert main(["fit", str(table), "--bootstrap", "100", "--out", str(out)]) == 0
    assert "gains: not estimable" in capsys.readouterr().out
    document = json.loads((out / "fit.json").read_text())
    assert document["gains"] is None and document["gain_intervals"] is None
    findings = document["findings"]
    assert findings["dense_only"] is True
    assert {"a_S", "b_S", "c_S", "gains", "optimal_sparsity"} <= set(findings["not_estimable"])
    assert findings["gains"] == findings["optimal_sparsity_chinchilla_multiples"] == "not estimable from this data"
    form = findings["chinchilla_form"]
    assert form["alpha"]["value"] == pytest.approx(0.3478, rel=0.1)
    assert form["beta"]["value"] == pytest.approx(0.3658, rel=0.1)
    assert form["E"]["value"] == pytest.approx(1.82, rel=0.05)
    low, high = form["alpha"]["interval_95"]
    assert low <= form["alpha"]["value"] <= high
    report = (out / "index.md").read_text()
    assert "L = E + A / N^alpha + B / D^beta" in report
    assert "Gains are not estimable" in report and "Optimal sparsity is not estimable" in report
    assert "x [" not in report.split("## Sparsity gains")[1].split("##")[1]  # no gain numbers anywhere after
    _check_figures(out)
    from engine.fit import read_table
    from engine.report.figures import _budgets

    budgets = _budgets(read_table(table))  # the figure draws this design one curve per budget
    assert budgets is not None and len(set(np.round(np.log10(budgets), 3))) == 10


def test_a_scattered_design_of_hundreds_of_runs_reports_with_bounded_figures(tmp_path: Path) -> None:
    table = scattered_sparse_table(rows=300)
    fit = fit_law(table, FitSettings(bootstrap=100))
    write_report(tmp_path, fit, table)
    _check_figures(tmp_path)
    report = (tmp_path / "index.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Summary: what this data says"  # what was learned, first
    summary = report.split("## Summary: what this data says")[1].split("\n## ")[0]
    assert "1. Loss against non-zeros" in summary and "2. Sparser is better" in summary and "3. Sparsity and data" in summary


def test_gains_and_predictions_outside_the_fitted_ranges_are_marked_extrapolated(tmp_path: Path, capsys) -> None:
    table = scattered_sparse_table(max_sparsity=0.75)
    settings = FitSettings(bootstrap=100, gain_sparsities=(0.5, 0.875), extrapolation=((0.5, 5e7, 3e10), (0.5, 1e9, 3e10)))
    fit = fit_law(table, settings)
    write_report(tmp_path, fit, table)
    findings = json.loads((tmp_path / "fit.json").read_text())["findings"]
    assert findings["gains"]["0.5"]["extrapolated"] == []
    assert findings["gains"]["0.875"]["extrapolated"] == ["S"]
    inside, outside = findings["predictions"]
    assert inside["loss"]["extrapolated"] == [] and outside["loss"]["extrapolated"] == ["N"]
    assert inside["loss"]["interval_95"][0] <= inside["loss"]["value"] <= inside["loss"]["interval_95"][1]
    report = (tmp_path / "index.md").read_text()
    assert "no: extrapolated" in report and "## Predictions at the declared points" in report

    assert main(["predict", str(tmp_path / "fit.json"), "--at", "0.5,5e7,3e10", "--at", "0.9,5e7,3e10", "--json"]) == 0
    at = json.loads(capsys.readouterr().out)["at"]
    assert at[0]["extrapolated"] == [] and at[1]["extrapolated"] == ["S"]
    assert main(["predict", str(tmp_path / "fit.json"), "--at", "0.5,1e9,3e12"]) == 0
    assert "extrapolated in N, D" in capsys.readouterr().out


def test_optimal_sparsity_statements_carry_bootstrap_intervals() -> None:
    table = scattered_sparse_table()
    fit = fit_law(table, FitSettings(bootstrap=100))
    findings = derive_findings(fit, table)
    for cost in ("dense", "sparse"):
        for s, estimate in findings.sopt_multiples[cost].items():
            low, high = estimate.interval
            assert low <= estimate.value <= high, (cost, s)
            assert estimate.extrapolated == ([] if s <= table.sparsity.max() else ["S"])


def test_declared_gains_costs_and_points_are_what_the_report_shows(tmp_path: Path) -> None:
    table = scattered_sparse_table()
    fit = fit_law(table, FitSettings(bootstrap=50, gain_sparsities=(0.6,), sopt_costs=("dense",)))
    write_report(tmp_path, fit, table)
    report = (tmp_path / "index.md").read_text()
    gains = report.split("## Sparsity gains")[1].split("\n## ")[0]
    assert "S = 0.6" in gains and "S = 0.5" not in gains and "S = 0.875" not in gains
    sopt = report.split("## Optimal sparsity")[1].split("\n## ")[0]
    assert "dense costs" in sopt and "sparse costs" not in sopt
    assert "## Predictions at the declared points" not in report  # none declared

    none_declared = fit_law(table, FitSettings(bootstrap=0, gain_sparsities=(), sopt_costs=()))
    write_report(tmp_path / "bare", none_declared, table)
    bare = (tmp_path / "bare" / "index.md").read_text()
    assert "## Sparsity gains" not in bare and "## Optimal sparsity" not in bare
    assert not (tmp_path / "bare" / "figures" / "sopt_contours.png").exists()


def test_the_spec_analysis_section_becomes_the_fit_settings() -> None:
    from engine.study.analysis import _fit_settings
    from spec.analysis import AnalysisSpec

    analysis = AnalysisSpec.model_validate({
        "gains": {"sparsities": [0.6, 0.9]}, "optimal_sparsity": None,
        "extrapolation": [{"sparsity": 0.75, "nonzeros": 6.04e8, "data": 3.28e10}],
    })
    settings = _fit_settings(analysis.fit, "none", analysis)
    assert settings.gain_sparsities == (0.6, 0.9)
    assert settings.sopt_costs == ()
    assert settings.extrapolation == ((0.75, 6.04e8, 3.28e10),)


def test_a_synthetic_image_sweep_reports_the_known_floor_beside_c(tmp_path: Path) -> None:
    """The built-in image task's floor is known; the report shows it next to the fitted c, and a
    sweep on other data gets no such section."""
    from engine.planning.plan import plan_experiment
    from engine.report.blocks import Paragraph
    from engine.report.studies import task_floor_blocks
    from engine.study.analysis import synthetic_images_reference

    fixtures = Path(__file__).parent / "fixtures" / "run"
    reference = synthetic_images_reference(plan_experiment(fixtures / "tiny_vit.yaml"))
    assert reference is not None
    assert 0 < reference["eval_floor"] < reference["trivial"] and 0 < reference["floor"] < reference["trivial"]
    table = scattered_sparse_table(rows=60)
    fit = fit_law(table, FitSettings(bootstrap=20))
    write_report(tmp_path, fit, table, extra_blocks=task_floor_blocks(reference, fit))
    report = (tmp_path / "index.md").read_text()
    section = report.split("## Irreducible loss: fitted c against the task's known floor")[1]
    assert f"{reference['eval_floor']:.4g}" in section and f"{fit.coefficients.c:.4g}" in section
    low, high = fit.intervals()["c"]
    for floor, verdict in ((2 * high + 1, "lies below the floor"), (low / 2, "lies above the floor"),
                           ((low + high) / 2, "contains the floor")):
        [paragraph] = [b for b in task_floor_blocks({**reference, "eval_floor": floor}, fit) if isinstance(b, Paragraph)]
        assert verdict in paragraph.text
    t5 = Path(__file__).resolve().parents[1] / "experiments" / "t5_sweep.yaml"
    assert synthetic_images_reference(plan_experiment(t5)) is None
