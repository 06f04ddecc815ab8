"""Subprocess side of tests/test_parallel.py: train the tiny spec's run on this process's devices.

The device count is fixed when JAX starts (XLA_FLAGS=--xla_force_host_platform_device_count=N),
so the tests run this script in a fresh process. argv[1] is a JSON list of tasks, each
{"run_dir": str, "overrides": [str], "stop_at": int | null}; a task trains (or resumes) the run
in run_dir through the engine's own build path and stops after step `stop_at` if given. Prints
one JSON line per task: {"resumed_from", "final_eval_loss", "metrics", "devices", "mesh"}.
A multi-host task joins jax.distributed from the environment first (engine.parallel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPEC = Path(__file__).parent / "fixtures" / "parallel" / "tiny_run.yaml"


class Stop(Exception):
    """Raised from the progress callback: the run is cut after its last checkpoint."""


def train(run_dir: Path, overrides: list[str], stop_at: int | None) -> dict:
    import jax

    from engine.build import build_setup
    from engine.plan import plan_experiment
    from engine.train import train_run

    [run] = plan_experiment(SPEC, overrides)
    setup = build_setup(run)

    def stop(step: int, loss: float) -> None:
        if stop_at is not None and step >= stop_at:
            raise Stop

    result = {"devices": jax.device_count(), "mesh": dict(setup.layout.mesh.shape),
              "process": jax.process_index()}
    try:
        outcome = train_run(setup, run_dir, stop)
        result |= {"resumed_from": outcome.resumed_from, "final_eval_loss": outcome.final_eval_loss}
    except Stop:
        result |= {"resumed_from": None, "final_eval_loss": None}
    metrics = run_dir / "metrics.jsonl"
    result["metrics"] = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return result


def main() -> None:
    from engine.parallel import initialize_distributed

    initialize_distributed()
    for task in json.loads(sys.argv[1]):
        print(json.dumps(train(Path(task["run_dir"]), task["overrides"], task.get("stop_at"))), flush=True)


if __name__ == "__main__":
    main()
