"""Run packs: runs of one shape trained as one vmapped program (engine/training/loop.py train_pack)
end as each run trained alone, up to float rounding, whether they run to the end, are killed and
resumed, or differ in length and sparsity; each keeps its own checkpoints, status and result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.planning.plan import plan_experiment
from engine.study.sweep import run_packs
from engine.training.build import build_setup
from engine.training.loop import pack_capacity

SPEC = Path(__file__).parent / "fixtures" / "run" / "tiny_pack.yaml"
# vmap batches the matmuls, which may change their reduction order: the last bits may differ.
RELATIVE_TOLERANCE = 1e-5


def results(out: Path) -> dict[str, dict]:
    lines = (out / "tiny_pack" / "results.jsonl").read_text().splitlines()
    return {row["run_id"]: row for row in map(json.loads, lines)}


def train(out: Path, *extra: str) -> dict[str, dict]:
    assert main(["run", str(SPEC), "--set", f"run.output_dir={out}", *extra]) == 0
    return results(out)


def assert_same_losses(packed: dict[str, dict], alone: dict[str, dict]) -> None:
    assert packed.keys() == alone.keys() and len(alone) == 4
    for run_id, row in alone.items():
        assert packed[run_id]["loss"] == pytest.approx(row["loss"], rel=RELATIVE_TOLERANCE), run_id


def test_the_four_runs_form_one_pack_and_pack_size_bounds_it(tmp_path: Path) -> None:
    runs = plan_experiment(SPEC, [f"run.output_dir={tmp_path}"])
    assert [len(pack) for pack in run_packs(runs)] == [4]
    smaller = plan_experiment(SPEC, [f"run.output_dir={tmp_path}", "run.pack_size=3"])
    assert [len(pack) for pack in run_packs(smaller)] == [3, 1]
    alone = plan_experiment(SPEC, [f"run.output_dir={tmp_path}", "run.pack_size=1"])
    assert [len(pack) for pack in run_packs(alone)] == [1, 1, 1, 1]


def test_a_pack_of_mixed_lengths_and_sparsities_ends_as_each_run_alone(tmp_path: Path) -> None:
    alone = train(tmp_path / "alone", "--set", "run.pack_size=1")
    packed = train(tmp_path / "packed")
    assert_same_losses(packed, alone)
    for run_id, row in packed.items():
        run_dir = tmp_path / "packed" / "tiny_pack" / run_id
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "done" and status["step"] == row["steps"]
        # Its own checkpoints at its own cadence, ending at its own length (keep: 2).
        assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == \
            [row["steps"] - 4, row["steps"]]
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert max(record["step"] for record in metrics) == row["steps"]


def test_pack_capacity_follows_the_memory_estimate() -> None:
    [run, *_] = plan_experiment(SPEC, [])
    setup = build_setup(run)
    assert pack_capacity(setup) == 1  # on a CPU: one run at a time unless run.pack_size says otherwise
    one = pack_capacity(setup, memory_bytes=1 << 30)
    assert one > 1 and pack_capacity(setup, memory_bytes=4 << 30) == pytest.approx(4 * one, rel=0.01)
    assert pack_capacity(setup, memory_bytes=1) == 1


def status_steps(out: Path) -> list[int]:
    steps = []
    for path in (out / "tiny_pack").glob("*/status.json"):
        try:
            steps.append(json.loads(path.read_text())["step"] or 0)
        except (ValueError, OSError):  # being replaced
            pass
    return steps


@pytest.fixture(scope="module")
def longer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """The fixture with runs long enough to be killed halfway (150 and 300 steps), and its
    results trained alone."""
    directory = tmp_path_factory.mktemp("longer")
    text = SPEC.read_text().replace("data.steps: [12, 24]", "data.steps: [150, 300]")
    spec = directory / "tiny_pack.yaml"
    spec.write_text(text.replace("checkpoint_every: 4", "checkpoint_every: 20"))
    assert main(["run", str(spec), "--set", f"run.output_dir={directory / 'alone'}", "--set", "run.pack_size=1"]) == 0
    return spec, results(directory / "alone")


@pytest.mark.parametrize("kill_after", [20, 160])
def test_a_pack_killed_and_resumed_ends_as_each_run_alone(
    tmp_path: Path, longer: tuple[Path, dict[str, dict]], kill_after: int
) -> None:
    spec, alone = longer
    out = tmp_path / "packed"
    command = [sys.executable, "-m", "engine.cli", "run", str(spec), "--set", f"run.output_dir={out}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and max(status_steps(out), default=0) < kill_after:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # at any moment: mid-step, mid-save or between runs
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    finished = results(out) if (out / "tiny_pack" / "results.jsonl").exists() else {}
    assert len(finished) < 4  # killed before the pack ended
    assert main(["run", str(spec), "--set", f"run.output_dir={out}"]) == 0
    assert_same_losses(results(out), alone)
