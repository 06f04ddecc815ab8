"""What a spec's `analysis:` declares is what `engine run`'s analysis does: `holdout: {kind: runs}`
holds the listed sweep coordinates out of the fit and the report shows their error, and
`report.formats` writes exactly the formats listed. Results are made from a known law (no training)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from engine.fit import paper
from engine.fit.law import predict_loss
from engine.planning.plan import plan_experiment
from engine.results import append_result
from engine.study.analysis import analyse

ROOT = Path(__file__).resolve().parent.parent
SPEC = """\
name: declared
model:
  kind: vit
  base: {layers: 1, num_heads: 2, mlp_ratio: 2.0, image_size: 8, patch_size: 4, channels: 3, num_classes: 4}
  width_multiple: 4
sparsity:
  pattern: {kind: unstructured}
  schedule: {kind: gmp, start: 0.25, end: 0.75, interval: 2}
optimizer:
  kind: adamw
  learning_rate: {kind: constant, value: 3.0e-3}
data:
  source: {kind: synthetic_images, seed: 0, eval_examples: 32, eval_batch_size: 16}
  steps: 16
  batch_size: 8
  eval_every: 8
sweep:
  grid:
    model.nonzeros: [1000, 2000, 4000]
    sparsity.level: [0.0, 0.5, 0.875]
    data.steps: [16, 32]
analysis:
  fit:
    starts: 4
    bootstrap: 0
    holdout:
      kind: runs
      coordinates:
        - {model.nonzeros: 4000, data.steps: 32}
        - {model.nonzeros: 1000, sparsity.level: 0.5, data.steps: 16}
  gains: null
  optimal_sparsity: null
"""


def sweep_with_results(tmp_path: Path, formats: str | None = None) -> tuple[list, Path]:
    """The planned sweep and a results.jsonl whose losses follow the paper's T5 law exactly."""
    text = SPEC + (f"  report: {{formats: {formats}}}\n" if formats else "")
    (tmp_path / "declared.yaml").write_text(text)
    runs = plan_experiment(tmp_path / "declared.yaml", [f"run.output_dir={tmp_path / 'runs'}"])
    sweep_dir = runs[0].run_dir.parent
    for run in runs:
        loss = float(predict_loss(paper.T5_C4, np.array(run.sparsity), np.array(run.nonzeros * 1e4),
                                  np.array(run.data * 1e4)))
        append_result(sweep_dir, {"sparsity": run.sparsity, "nonzeros": run.nonzeros * 1e4, "data": run.data * 1e4,
                                  "loss": loss, "run_id": run.run_id, "init": run.init})
    return runs, sweep_dir


def test_runs_holdout_holds_out_the_listed_coordinates_and_reports_their_error(tmp_path: Path) -> None:
    runs, sweep_dir = sweep_with_results(tmp_path)
    report_dir = analyse(runs, sweep_dir, Console(file=StringIO()))
    fit = json.loads((report_dir / "fit.json").read_text())
    held = {run.run_id for run in runs if (run.coordinates["model.nonzeros"] == 4000 and run.coordinates["data.steps"] == 32)
            or run.coordinates == {"model.nonzeros": 1000, "sparsity.level": 0.5, "data.steps": 16}}
    assert len(held) == 4
    order = [json.loads(line)["run_id"] for line in (sweep_dir / "results.jsonl").read_text().splitlines()]
    assert {order[row] for row in fit["holdout"]["rows"]} == held
    assert fit["holdout"]["mean_absolute_relative_error"] < 0.01  # exact law: predicted from the rest
    report = (report_dir / "index.md").read_text()
    assert "Held-out check" in report and "(4 runs)" in report and "mean absolute error" in report


@pytest.mark.parametrize("formats, written, absent", [
    ("[markdown]", ["index.md", "figures"], ["index.html"]),
    ("[html]", ["index.html"], ["index.md"]),
    ("[markdown, html]", ["index.md", "index.html"], []),
])
def test_report_formats_writes_exactly_the_declared_formats(
    tmp_path: Path, formats: str, written: list[str], absent: list[str]
) -> None:
    runs, sweep_dir = sweep_with_results(tmp_path, formats)
    report_dir = sweep_dir / "report"
    report_dir.mkdir()
    for name in absent:  # a stale index of another format from an earlier run goes away
        (report_dir / name).write_text("stale")
    analyse(runs, sweep_dir, Console(file=StringIO()))
    assert all((report_dir / name).exists() for name in written + ["fit.json"])
    assert not any((report_dir / name).exists() for name in absent)
