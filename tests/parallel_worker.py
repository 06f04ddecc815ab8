"""Subprocess side of tests/test_parallel.py: train the tiny spec's run on this process's devices.

The device count is fixed when JAX starts (XLA_FLAGS=--xla_force_host_platform_device_count=N),
so the tests run this script in a fresh process. argv[1] is a JSON list of tasks, each
{"run_dir": str, "overrides": [str]}; a task trains (or resumes) the run in run_dir through the
engine's own build path. Prints one JSON line per task: {"resumed_from", "final_eval_loss",
"metrics", "devices", "mesh", "process"}.
A multi-host task joins jax.distributed from the environment first (engine.training.parallel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPEC = Path(__file__).parent / "fixtures" / "parallel" / "tiny_run.yaml"


def train(run_dir: Path, overrides: list[str]) -> dict:
    import jax

    from engine.planning.plan import plan_experiment
    from engine.training.build import build_setup
    from engine.training.loop import train_run

    [run] = plan_experiment(SPEC, overrides)
    setup = build_setup(run)

    result = {"devices": jax.device_count(), "mesh": dict(setup.layout.mesh.shape),
              "process": jax.process_index(), "process_local": getattr(setup.data, "process_local", False)}
    outcome = train_run(setup, run_dir)
    result |= {"resumed_from": outcome.resumed_from, "final_eval_loss": outcome.final_eval_loss}
    metrics = run_dir / "metrics.jsonl"
    result["metrics"] = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return result


def main() -> None:
    from engine.training.parallel import initialize_distributed

    initialize_distributed()
    for task in json.loads(sys.argv[1]):
        print(json.dumps(train(Path(task["run_dir"]), task["overrides"])), flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # noqa: BLE001 - exit now: a multi-host peer would wait out jax's shutdown barrier
        import os
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
