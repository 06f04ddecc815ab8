"""`analysis.design`: an adaptive study trains its initial runs, then fit -> suggest -> train
rounds, recorded so that a rerun resumes them instead of choosing again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.planning.plan import plan_experiment

FIXTURES = Path(__file__).parent / "fixtures"


def _spec(tmp_path: Path, design: str) -> Path:
    spec = tmp_path / "adaptive.yaml"
    spec.write_text(f"""extends: {FIXTURES / 'run' / 'tiny_vit.yaml'}
name: tiny_adaptive
sweep:
  grid:
    model.nonzeros: [1000, 2000, 4000]
    sparsity.level: [0.0, 0.5, 0.875]
    data.steps: [8, 16]
analysis:
  fit: {{huber_delta: 1.0e-2, log_loss: false, starts: 8, seed: 0, bootstrap: 50, holdout: {{kind: none}}}}
  design: {design}
run: {{checkpoint_every: 8, keep: 2, output_dir: {tmp_path / 'runs'}}}
""")
    return spec


def test_an_adaptive_study_trains_the_initial_runs_then_one_suggested_round(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path, "{target: all, rounds: 1, batch: 2, budget: 1.0, "
                           "initial: {model.nonzeros: [1000, 4000], sparsity.level: [0.0, 0.875]}}")
    assert main(["run", str(spec)]) == 0
    sweep = tmp_path / "runs" / "tiny_adaptive"
    rounds = [json.loads(line) for line in (sweep / "design.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1] and len(rounds[0]["run_ids"]) == 2
    done = {run.run_id for run in plan_experiment(spec) if run.status.state == "done"}
    initial = {run.run_id for run in plan_experiment(spec)
               if run.coordinates["model.nonzeros"] in (1000, 4000) and run.coordinates["sparsity.level"] in (0.0, 0.875)}
    assert len(initial) == 8 and done == initial | set(rounds[0]["run_ids"])  # nothing else trained
    assert not initial & set(rounds[0]["run_ids"])
    report = (sweep / "report" / "index.md").read_text()
    assert "## Adaptive design: all" in report
    summary = json.loads((sweep / "report" / "design.json").read_text())
    assert summary["share_of_grid"] < 1 and summary["rounds"][0]["run_ids"] == rounds[0]["run_ids"]
    capsys.readouterr()

    assert main(["run", str(spec)]) == 0  # rounds done: nothing new trained, no new round
    assert "trained 0" in capsys.readouterr().err
    assert len((sweep / "design.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("initial, message", [
    ("{data.batch_size: [8]}", "data.batch_size is not a sweep axis"),
    ("{model.nonzeros: [3000]}", "[3000] not among the sweep's values"),
])
def test_a_bad_initial_selection_is_refused_before_training(tmp_path: Path, capsys, initial: str, message: str) -> None:
    spec = _spec(tmp_path, f"{{target: 'gain:0.5', budget: 1.0, initial: {initial}}}")
    assert main(["run", str(spec)]) == 1
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("tiny_adaptive/*/status.json"))  # nothing trained


def test_the_target_is_checked_by_the_spec(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path, "{target: 'gain', budget: 1.0, initial: {model.nonzeros: [1000]}}")
    assert main(["validate", str(spec)]) == 1
    assert "analysis.design.target" in capsys.readouterr().out
