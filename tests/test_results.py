"""Results and status files: atomic, append-only, robust to a torn last line."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest

from engine.planning.plan import RunStatus, read_status
from engine.results import (
    RESULT_COLUMNS,
    append_result,
    sweep_rows,
    write_status,
)


def _row(run_id: str, loss: float) -> dict:
    return {"run_id": run_id, "sparsity": 0.5, "nonzeros": 1000, "data": 3200, "loss": loss}


def test_append_writes_jsonl_and_csv(tmp_path: Path) -> None:
    append_result(tmp_path, _row("a", 1.5))
    append_result(tmp_path, _row("b", 1.25))
    assert [r["run_id"] for r in sweep_rows(tmp_path)] == ["a", "b"]
    with open(tmp_path / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0].keys()) == list(RESULT_COLUMNS)
    assert [float(r["loss"]) for r in rows] == [1.5, 1.25]


def test_a_run_is_recorded_once(tmp_path: Path) -> None:
    append_result(tmp_path, _row("a", 1.5))
    append_result(tmp_path, _row("a", 9.0))
    assert [r["loss"] for r in sweep_rows(tmp_path)] == [1.5]


def test_torn_last_line_is_skipped_and_does_not_swallow_the_next_row(tmp_path: Path) -> None:
    append_result(tmp_path, _row("a", 1.5))
    with open(tmp_path / "results.jsonl", "a") as handle:
        handle.write('{"run_id": "b", "los')  # killed mid-write
    append_result(tmp_path, _row("c", 1.0))
    assert [r["run_id"] for r in sweep_rows(tmp_path)] == ["a", "c"]


def test_written_status_is_what_plan_reads(tmp_path: Path) -> None:
    assert read_status(tmp_path / "run") == RunStatus("new")
    write_status(tmp_path / "run", "failed", 17, "loss is nan")
    assert read_status(tmp_path / "run") == RunStatus("failed", 17, "loss is nan")
    write_status(tmp_path / "run", "running", 40)
    assert read_status(tmp_path / "run").describe() == "partial at step 40"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Atomic replacement (mkstemp makes 0600) and appends give what any other tool would."""
    from engine.results import atomic_write_text

    previous = os.umask(umask)
    try:
        write_status(tmp_path / "run", "running", 3)
        append_result(tmp_path, _row("a", 1.5))
        atomic_write_text(tmp_path / "plan.json", "[]")
    finally:
        os.umask(previous)
    for path in (tmp_path / "run" / "status.json", tmp_path / "results.jsonl", tmp_path / "results.csv",
                 tmp_path / "plan.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
