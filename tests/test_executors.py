"""`engine run --executor local|ray|slurm` on a 3-run tiny sweep: the same results everywhere.

Ray runs a real local cluster (started by the driver, 2 CPUs here); SLURM goes through submitit's
local executor, which runs each array task as a process on this machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.planning.plan import plan_experiment
from engine.results import sweep_rows
from engine.study.executors import merge_summaries, worker_jobs
from engine.study.executors.worker import train_one
from engine.study.sweep import SweepSummary

# submitit configures logging handlers on sys.stdout/stderr when first imported; under pytest's
# capture those are the capture's streams, closed after the test, which breaks pytest's teardown.
os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")

SPEC = Path(__file__).parent / "fixtures" / "parallel" / "tiny_sweep.yaml"
NAME = "tiny_executors"


def _run(out: Path, *extra: str) -> int:
    return main(["run", str(SPEC), "--set", f"run.output_dir={out}", "--no-report", *extra])


def _losses(out: Path) -> dict[str, float]:
    return {row["run_id"]: row["loss"] for row in sweep_rows(out / NAME)}


def _csv_run_ids(out: Path) -> list[str]:
    lines = (out / NAME / "results.csv").read_text().splitlines()
    column = lines[0].split(",").index("run_id")
    return sorted(line.split(",")[column] for line in lines[1:])


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    out = tmp_path_factory.mktemp("local")
    assert _run(out) == 0
    losses = _losses(out)
    assert len(losses) == 3
    return losses


def test_ray_executor_gives_the_same_results_as_local(local: dict[str, float], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert _run(tmp_path, "--executor", "ray", "--ray-address", "local") == 0
    assert _losses(tmp_path) == local  # one device, same program: bit-identical
    assert _csv_run_ids(tmp_path) == sorted(local)
    assert "trained 3, skipped 0, failed 0" in capsys.readouterr().err


def test_slurm_executor_through_submitit_gives_the_same_results_as_local(
    local: dict[str, float], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _run(tmp_path, "--executor", "slurm", "--slurm-option", "cluster=local",
                "--slurm-option", "timeout_min=10") == 0
    err = capsys.readouterr().err
    assert "3 array tasks on submitit cluster 'local'" in err and "trained 3, skipped 0, failed 0" in err
    assert _losses(tmp_path) == local
    assert _csv_run_ids(tmp_path) == sorted(local)
    # a second submission finds every run done: each task skips its run
    assert _run(tmp_path, "--executor", "slurm", "--slurm-option", "cluster=local") == 0
    assert "trained 0, skipped 3" in capsys.readouterr().err


def test_results_merge_without_loss_when_workers_finish_out_of_order(local: dict[str, float], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    runs = plan_experiment(SPEC, [f"run.output_dir={tmp_path}"])
    jobs = worker_jobs(SPEC, [f"run.output_dir={tmp_path}"], runs, {"retry_failed": False})
    finish_order = [jobs[2], jobs[0], jobs[1]]  # not the plan's order
    summaries = [train_one(job) for job in finish_order]
    assert merge_summaries(summaries, SweepSummary()).trained == 3
    rows = sweep_rows(tmp_path / NAME)
    assert [row["run_id"] for row in rows] == [job.run_id for job in finish_order]
    assert {row["run_id"]: row["loss"] for row in rows} == local
    # the driver's view afterwards: every run done, nothing trained again
    capsys.readouterr()
    assert _run(tmp_path) == 0
    assert "trained 0, skipped 3" in capsys.readouterr().err


def test_run_id_selects_runs_and_unknown_ids_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(tmp_path, "--run-id", "000000000000") == 2
    assert "--run-id 000000000000: no such run" in capsys.readouterr().err
    assert not (tmp_path / NAME / "results.jsonl").exists()


def test_a_missing_extra_names_the_pip_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    assert _run(tmp_path, "--executor", "slurm") == 1
    assert "pip install 'sparse-scaling-engine[slurm]'" in capsys.readouterr().err
    assert not (tmp_path / NAME / "results.jsonl").exists()


def test_summaries_add_up() -> None:
    merged = merge_summaries([SweepSummary(trained=1), SweepSummary(failed=1, preempted=True),
                              SweepSummary(skipped=2)], SweepSummary())
    assert (merged.trained, merged.failed, merged.skipped, merged.preempted) == (1, 1, 2, True)
