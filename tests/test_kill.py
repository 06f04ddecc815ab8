"""SIGKILL a real `engine run` again and again, then let it finish: the outcome equals an
uninterrupted run's, bit for bit.

Kills land on purpose (fast tier: 4, one in each kind of write) inside a checkpoint save, a checksum-manifest write, a status
write and a results append (test-only hooks, engine/faults.py), and at random moments (the slow tier). After
the last, unhindered `engine run`: every results.jsonl line is whole JSON, each run id appears
once with the baseline's row, final parameters and the metrics' losses equal the baseline's,
every checkpoint left verifies and restores, and every run is done.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "run"
STEPS = 16
# Two runs (dense and 87.5% sparse) of the tiny ViT, a checkpoint every 4 of 16 steps.
SWEEP_ARGS = ["--only", "model.nonzeros=1000", "--set", "run.checkpoint_every=4", "--no-report"]


def engine_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "run", str(FIXTURES / "tiny_vit.yaml"),
            "--set", f"run.output_dir={out}", *SWEEP_ARGS, *extra]


def engine_env(**faults: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_TEST_")}
    return {**clean, "JAX_PLATFORMS": "cpu", **faults}


def run_engine(out: Path, timeout: float = 300, **faults: str) -> subprocess.CompletedProcess:
    return subprocess.run(engine_command(out), capture_output=True, text=True, timeout=timeout,
                          env=engine_env(**faults))


def run_and_kill_after(out: Path, delay: float) -> int:
    """Start `engine run`, SIGKILL it after `delay` seconds (if still running); its exit code."""
    process = subprocess.Popen(engine_command(out), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=engine_env())
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    return process.returncode


def sweep_dir(out: Path) -> Path:
    return out / "tiny_vit"


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in sweep_dir(out).iterdir() if p.is_dir())


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    import jax

    from engine.training.checkpoint import CheckpointStore

    with CheckpointStore(run_dir / "checkpoints", keep=1000) as store:
        params = store.restore_params(STEPS)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def losses(run_dir: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("eval_loss")) for r in records]


def result_rows(out: Path) -> list[dict]:
    """Every line of results.jsonl, each of which must be whole JSON (no torn line)."""
    text = (sweep_dir(out) / "results.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_same_as_baseline(out: Path, baseline: Path) -> None:
    from engine.training.checkpoint import CheckpointStore, verify_manifest

    rows, expected = result_rows(out), result_rows(baseline)
    ids = [row["run_id"] for row in rows]
    assert len(ids) == len(set(ids)), f"a run recorded twice: {ids}"
    without_time = lambda row: {k: v for k, v in row.items() if k != "wall_s"}  # noqa: E731
    assert sorted(map(json.dumps, map(without_time, rows))) == sorted(map(json.dumps, map(without_time, expected)))
    assert [p.name for p in run_dirs(out)] == [p.name for p in run_dirs(baseline)]
    for run_dir, base_dir in zip(run_dirs(out), run_dirs(baseline), strict=True):
        assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
        got, want = final_params(run_dir), final_params(base_dir)
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[name], want[name]) for name in want), run_dir.name
        assert losses(run_dir) == losses(base_dir)
        with CheckpointStore(run_dir / "checkpoints", keep=1000) as store:
            for step in store.steps():  # every checkpoint left is whole and restores
                assert verify_manifest(run_dir / "checkpoints" / str(step)) is None
                store.restore_params(step)


def attempts(out: Path) -> int:
    return sum(len((d / "attempts.jsonl").read_text().splitlines()) for d in run_dirs(out))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    finished = run_engine(out)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return out


# (point, arrival): each kill lands inside a different kind of write. The 2nd checkpoint save is
# step 8 of the first run; a restarted process resumes, so every kill leaves the sweep further on.
TARGETED_KILLS = [
    ("checkpoint-save", 2),      # an asynchronous Orbax save in flight
    ("checkpoint-manifest", 1),  # a step committed by Orbax, its checksum manifest not yet renamed
    ("file-replace", 3),         # a status.json / spec.yaml temporary file written, not renamed
    ("results-write", 1),        # half a results.jsonl line written and fsynced
]


def test_targeted_kills_leave_the_outcome_of_an_uninterrupted_run(tmp_path: Path, baseline: Path) -> None:
    killed = 0
    for point, arrival in TARGETED_KILLS:
        attempt = run_engine(tmp_path, ENGINE_TEST_KILL_AT=f"{point}:{arrival}")
        if attempt.returncode == 0:
            break  # the sweep finished before reaching this point
        assert attempt.returncode == -signal.SIGKILL, attempt.stderr[-2000:]
        killed += 1
    assert killed == len(TARGETED_KILLS)
    finished = run_engine(tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    assert_same_as_baseline(tmp_path, baseline)
    assert attempts(tmp_path) > len(run_dirs(tmp_path))  # runs were resumed, not started over


@pytest.mark.slow
def test_twenty_plus_random_and_targeted_kills(tmp_path: Path, baseline: Path) -> None:
    """The soak: kills at random moments over the whole run, mixed with kills inside each kind of
    write, until 24 kills have landed; then the sweep finishes and equals the baseline."""
    rng = random.Random(7)
    started = time.perf_counter()
    finished_once = run_engine(tmp_path / "timing")
    assert finished_once.returncode == 0
    duration = time.perf_counter() - started
    kills, random_kills, rounds, verified, earlier_attempts = 0, 0, 0, 0, 0
    while kills < 24:
        rounds += 1
        assert rounds < 80, "the sweep makes no progress between kills"
        if rounds % 2:
            code = run_and_kill_after(tmp_path, rng.uniform(0.5, duration))
            random_kills += code == -signal.SIGKILL
        else:
            point = rng.choice(["checkpoint-save", "checkpoint-manifest", "file-replace", "results-write"])
            code = run_engine(tmp_path, ENGINE_TEST_KILL_AT=f"{point}:{rng.randint(1, 3)}").returncode
        if code == 0:  # finished between kills: start the sweep over to keep killing
            assert_same_as_baseline(tmp_path, baseline)
            verified += 1
            earlier_attempts += attempts(tmp_path)
            for run_dir in run_dirs(tmp_path):
                subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            (sweep_dir(tmp_path) / "results.jsonl").unlink()
            continue
        assert code == -signal.SIGKILL
        kills += 1
    finished = run_engine(tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert_same_as_baseline(tmp_path, baseline)
    verified += 1
    print(f"\nkills survived: {kills} ({random_kills} at random moments, {kills - random_kills} "
          f"inside writes) in {rounds} rounds; {verified} sweeps of 2 runs finished and equal the "
          f"baseline; run starts and resumes (attempts.jsonl): {earlier_attempts + attempts(tmp_path)}")
