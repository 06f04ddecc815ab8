"""Several `engine run` processes on one sweep: claims and results appends under real races."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.results import sweep_rows
from engine.study import claims

FIXTURES = Path(__file__).parent / "fixtures" / "run"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_claim(run_dir: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / claims.CLAIM_FILE
    path.write_text(json.dumps({"host": host, "pid": pid, "started": time.time() - age_s, "token": "old"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_a_claim_is_exclusive_until_released(tmp_path: Path) -> None:
    held = claims.claim(tmp_path / "run")
    assert held is not None
    assert claims.claim(tmp_path / "run") is None  # held by a live process: this one
    claims.record_attempt(held, None)
    claims.release(held)
    again = claims.claim(tmp_path / "run")
    assert again is not None
    claims.record_attempt(again, 8)
    claims.release(again)
    assert not (tmp_path / "run" / claims.CLAIM_FILE).exists()
    attempts = [json.loads(line) for line in (tmp_path / "run" / claims.ATTEMPTS_FILE).read_text().splitlines()]
    assert [a["step"] for a in attempts] == [None, 8] and attempts[0]["pid"] == os.getpid()


def test_the_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_claim(tmp_path / "run", socket.gethostname(), dead_pid())
    held = claims.claim(tmp_path / "run", stale_after=3600)
    assert held is not None and held.holder["pid"] == os.getpid()
    assert "is gone" in capsys.readouterr().err
    claims.release(held)


def test_another_hosts_claim_is_taken_over_only_without_a_heartbeat(tmp_path: Path) -> None:
    write_claim(tmp_path / "run", "elsewhere", 12345, age_s=5)
    assert claims.claim(tmp_path / "run", stale_after=60) is None  # a recent heartbeat
    write_claim(tmp_path / "run", "elsewhere", 12345, age_s=120)
    held = claims.claim(tmp_path / "run", stale_after=60)
    assert held is not None
    claims.release(held)


def eventually(condition, timeout: float = 10.0) -> bool:
    """Polls `condition` (a busy CI machine may schedule the heartbeat thread late)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_heartbeat_refreshes_the_claim_and_notices_a_takeover(tmp_path: Path) -> None:
    held = claims.claim(tmp_path / "run", stale_after=0.4)  # beats every 0.1 s
    path = tmp_path / "run" / claims.CLAIM_FILE
    os.utime(path, (time.time() - 100, time.time() - 100))
    assert eventually(lambda: time.time() - path.stat().st_mtime < 5.0)  # refreshed
    assert not held.lost
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0, "token": "theirs"}))
    assert eventually(lambda: held.lost)
    claims.release(held)
    assert json.loads(path.read_text())["token"] == "theirs"  # a lost claim is not removed


APPENDER = """
import sys
from pathlib import Path
from engine.results import append_result
for i in range(int(sys.argv[2])):
    append_result(Path(sys.argv[1]), {"run_id": f"r{i}", "sparsity": 0.5, "nonzeros": 10, "data": 5,
                                      "loss": 1.0, "writer": sys.argv[3], "pad": "x" * 3000})
"""


def test_concurrent_appends_record_each_run_once_and_whole(tmp_path: Path) -> None:
    """Four processes append the same 25 run ids (3 kB lines) at once."""
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), "25", str(n)])
               for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole
    assert sorted(row["run_id"] for row in rows) == sorted(f"r{i}" for i in range(25))
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 26


def test_two_engine_runs_on_one_sweep_train_each_run_exactly_once(tmp_path: Path) -> None:
    """Two real `engine run` processes started together on the 4-run tiny sweep."""
    command = [sys.executable, "-m", "engine.cli", "run", str(FIXTURES / "tiny_vit.yaml"),
               "--set", f"run.output_dir={tmp_path}", "--no-report"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    sweep = tmp_path / "tiny_vit"
    rows = sweep_rows(sweep)
    assert len(rows) == 4 and len({row["run_id"] for row in rows}) == 4
    for run_dir in (p for p in sweep.iterdir() if p.is_dir()):
        starts = (run_dir / claims.ATTEMPTS_FILE).read_text().splitlines()
        assert len(starts) == 1, f"{run_dir.name} was started {len(starts)} times"
        assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
        assert not (run_dir / claims.CLAIM_FILE).exists()
    trainers = {json.loads((d / claims.ATTEMPTS_FILE).read_text())["pid"] for d in sweep.iterdir() if d.is_dir()}
    assert trainers <= {p.pid for p in processes}
