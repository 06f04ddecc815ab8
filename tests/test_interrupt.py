"""Ctrl-C (SIGINT) on a real `engine run`: the run's status records where it stopped and stays
resumable, the terminal says which checkpoint a resume restores and the exact command to run,
and the rerun says it resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "run"
# One run of the tiny ViT, long enough to be interrupted, a checkpoint every 4 steps.
ARGS = ["--only", "model.nonzeros=1000", "--only", "sparsity.level=0.0", "--set", "data.steps=5000",
        "--set", "run.checkpoint_every=4", "--no-report"]


def start(out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.cli", "run", str(FIXTURES / "tiny_vit.yaml"),
               "--set", f"run.output_dir={out}", *ARGS]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_TEST_")} | {"JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def status_of(out: Path) -> dict:
    [path] = (out / "tiny_vit").glob("*/status.json")
    return json.loads(path.read_text())


def interrupt_after_checkpoint(process: subprocess.Popen, out: Path, past_step: int) -> tuple[str, str]:
    """SIGINT once the run has checkpointed past `past_step`; the process's output."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if status_of(out)["step"] > past_step:
                break
        except (ValueError, OSError):  # not written yet
            pass
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    return stdout, stderr


def test_ctrl_c_records_the_step_names_the_checkpoint_and_the_command_and_the_rerun_resumes(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    stdout, stderr = interrupt_after_checkpoint(start(out), out, 4)
    status = status_of(out)
    assert status["state"] == "running" and status["reason"].startswith("interrupted at step ")
    stopped_at, checkpoint = int(status["reason"].split()[-1]), status["step"]
    assert checkpoint >= 4 and checkpoint % 4 == 0 and stopped_at > 4  # a save may still have been in flight
    [run_dir] = (out / "tiny_vit").glob("*/status.json")
    run_id = run_dir.parent.name
    assert (f"run {run_id} interrupted at step {stopped_at}: its checkpoint at step {checkpoint} "
            f"({run_dir.parent / 'checkpoints' / str(checkpoint)}) will be resumed") in stdout + stderr
    command = " ".join(["engine", "run", str(FIXTURES / "tiny_vit.yaml"), "--set", f"run.output_dir={out}", *ARGS])
    assert stderr.splitlines()[-3:] == ["interrupted", "to resume, run the same command again:", f"  {command}"]
    assert "Traceback" not in stdout + stderr and "ERROR" not in stdout + stderr

    # `engine plan` shows it partial, with where it stopped.
    plan = subprocess.run([sys.executable, "-m", "engine.cli", "plan", str(FIXTURES / "tiny_vit.yaml"),
                           "--set", f"run.output_dir={out}", "--set", "data.steps=5000", "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    [row] = [row for row in json.loads(plan.stdout)["runs"] if row["run_id"] == run_id]
    assert row["status"] == {"state": "partial", "step": checkpoint, "reason": f"interrupted at step {stopped_at}"}

    # The rerun says it resumes, from that checkpoint.
    stdout, stderr = interrupt_after_checkpoint(start(out), out, checkpoint)
    assert f"resuming run {run_id} from step {checkpoint}" in stdout + stderr
