"""`engine run` and `engine inspect` end to end on tiny specs, in a subprocess-free way (main())."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.cli import main
from engine.results import sweep_rows

FIXTURES = Path(__file__).parent / "fixtures" / "run"


def _run(spec: str, out: Path, *extra: str) -> int:
    return main(["run", str(FIXTURES / spec), "--set", f"run.output_dir={out}", *extra])


def test_run_trains_once_then_does_no_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run("tiny_vit.yaml", tmp_path) == 0
    rows = sweep_rows(tmp_path / "tiny_vit")
    assert len(rows) == 4 and all(row["steps"] == 16 for row in rows)
    statuses = [json.loads(p.read_text())["state"] for p in (tmp_path / "tiny_vit").glob("*/status.json")]
    assert statuses == ["done"] * 4
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "tiny_vit").rglob("*") if p.is_file()}

    capsys.readouterr()
    assert _run("tiny_vit.yaml", tmp_path) == 0
    assert "trained 0, skipped 4" in capsys.readouterr().err
    assert len(sweep_rows(tmp_path / "tiny_vit")) == 4
    touched = [p for p, t in mtimes.items() if p.name != "plan.json" and p.stat().st_mtime_ns != t]
    assert touched == []


def test_inspect_confirms_unstructured_sparsity(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run("tiny_vit.yaml", tmp_path, "--only", "sparsity.level=0.875", "--only", "model.nonzeros=1000") == 0
    assert len(json.loads((tmp_path / "tiny_vit" / "plan.json").read_text())) == 4  # the whole grid
    run_dir = next(p.parent for p in (tmp_path / "tiny_vit").glob("*/status.json"))
    capsys.readouterr()
    assert main(["inspect", str(run_dir / "checkpoints"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 16
    sparse = [t for t in report["tensors"] if t["sparsified"]]
    # each sparsified tensor keeps 12.5% of its weights, to one element
    assert sparse and all(abs(t["nonzeros"] - 0.125 * math.prod(t["shape"])) <= 1 for t in sparse)
    dense = [t for t in report["tensors"] if not t["sparsified"]]
    assert all(t["sparsity"] < 0.5 for t in dense)


def test_inspect_confirms_nm_pattern(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run("tiny_nm.yaml", tmp_path) == 0
    run_dir = next(p.parent for p in (tmp_path / "tiny_nm").glob("*/status.json"))
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pattern"] == "2:4" and report["nm_valid"] is True
    assert report["sparsity"] == pytest.approx(0.5)


def test_only_with_an_unknown_axis_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run("tiny_vit.yaml", tmp_path, "--only", "data.steps=16") == 2
    assert "not a sweep axis" in capsys.readouterr().err
    assert not (tmp_path / "tiny_vit").exists()


def test_sigterm_saves_a_checkpoint_and_exits_resumable(tmp_path: Path) -> None:
    """A real `engine run` subprocess gets SIGTERM mid-run: it checkpoints the step it reached,
    exits 75, and the next `engine run` resumes from that step and finishes. The preemption save
    happens even where run.checkpoint_min_seconds skips every periodic one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "engine.cli", "run", str(FIXTURES / "tiny_vit.yaml"),
               "--only", "sparsity.level=0.875", "--only", "model.nonzeros=1000",
               "--set", "data.steps=4000", "--set", "run.checkpoint_every=1000",
               "--set", "run.checkpoint_min_seconds=1e6",
               "--set", f"run.output_dir={tmp_path}", "--no-report"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.monotonic() + 120
    metrics = None
    while time.monotonic() < deadline and process.poll() is None:
        metrics = next((tmp_path / "tiny_vit").glob("*/metrics.jsonl"), None)
        if metrics is not None and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1].decode()[-2000:]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr.decode()[-2000:]

    run_dir = metrics.parent
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "running" and 0 < status["step"] < 4000
    saved = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [status["step"]]  # the preemption step itself; no periodic save within 1e6 s

    resumed = subprocess.run(command, capture_output=True, timeout=600,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    rows = sweep_rows(tmp_path / "tiny_vit")
    assert len(rows) == 1 and rows[0]["steps"] == 4000
