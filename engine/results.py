"""Where a sweep's results live on disk (DESIGN.md section 3), written so a kill never tears them.

runs/<spec name>/results.jsonl   one JSON line per finished run: appended, flushed and fsynced
runs/<spec name>/results.csv     rebuilt from results.jsonl after every append (atomic replace)
runs/<spec name>/<run id>/status.json   running | done | failed, the step and the reason
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Literal

# The law's inputs first (what `engine fit` reads), then what the engine adds (DESIGN.md section 3).
CANONICAL_COLUMNS = ("sparsity", "nonzeros", "data", "loss")
ENGINE_COLUMNS = (
    "run_id", "family", "pattern", "dense_params", "d_model", "steps", "batch_size",
    "flops_dense", "flops_sparse", "init", "wall_s", "source_run_id", "pretrain_data",
)
RESULT_COLUMNS = CANONICAL_COLUMNS + ENGINE_COLUMNS

RunState = Literal["running", "done", "failed"]
STATUS_FILE = "status.json"  # read back by engine.plan.read_status


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def write_status(
    run_dir: Path, state: RunState, step: int, reason: str | None = None, **extra: Any
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {"state": state, "step": step, "reason": reason, **extra}
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(status, indent=1) + "\n")


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every well-formed row of results.jsonl; a torn or garbled line is skipped."""
    path = sweep_dir / "results.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_result(sweep_dir: Path, row: dict[str, Any]) -> None:
    """Record one finished run. A row for a run_id already recorded replaces nothing: the first
    result of a run is final (a run is never trained twice)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if any(existing.get("run_id") == row["run_id"] for existing in read_results(sweep_dir)):
        return
    path = sweep_dir / "results.jsonl"
    # A kill mid-append leaves a line without its newline: end it, so the new row stands alone.
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(("\n" if torn else "") + json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    write_results_csv(sweep_dir)


def write_results_csv(sweep_dir: Path) -> None:
    rows = read_results(sweep_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "results.csv", buffer.getvalue())
