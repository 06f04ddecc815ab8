"""Reliability of `engine run` in-process (main()): corrupted checkpoints and results, divergence
and the failure policy, spec drift, full and unwritable disks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.planning.plan import plan_experiment
from engine.results import append_result, sweep_rows

FIXTURES = Path(__file__).parent / "fixtures" / "run"
ONE_RUN = ["--only", "model.nonzeros=1000", "--only", "sparsity.level=0.875",
           "--set", "run.checkpoint_every=4", "--no-report"]
TWO_RUNS = ["--only", "model.nonzeros=1000", "--set", "run.checkpoint_every=4", "--no-report"]


def engine_run(out: Path, *extra: str, spec: Path = FIXTURES / "tiny_vit.yaml") -> int:
    return main(["run", str(spec), "--set", f"run.output_dir={out}", *extra])


def two_run_ids() -> list[str]:
    """The ids of TWO_RUNS's runs in training order (run ids ignore the run policy)."""
    runs = plan_experiment(FIXTURES / "tiny_vit.yaml")
    return [run.run_id for run in runs if run.coordinates["model.nonzeros"] == 1000]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def only_run_dir(out: Path) -> Path:
    (run_dir,) = [p.parent for p in (out / "tiny_vit").glob("*/status.json")]
    return run_dir


def step_files(step_dir: Path) -> list[Path]:
    """The data files of a checkpoint step, largest first (the array data)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and not p.name.startswith("manifest")]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


# --- corruption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbled", "truncated"])
def test_a_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(
    tmp_path: Path, capsys: pytest.CaptureFixture, damage: str
) -> None:
    assert engine_run(tmp_path, *ONE_RUN) == 0
    run_dir = only_run_dir(tmp_path)
    expected_loss = status(run_dir)["eval_loss"]
    victim = step_files(run_dir / "checkpoints" / "16")[0]
    data = bytearray(victim.read_bytes())
    if damage == "garbled":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.write_bytes(bytes(data[: len(data) // 3]))
    capsys.readouterr()

    # `engine inspect` names the bad step and shows the previous one.
    assert main(["inspect", str(run_dir), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["step"] == 12
    assert "checkpoint step 16" in captured.err and "checksum mismatch" in captured.err

    # A kill after the final save but before the result was recorded: the run resumes from 12.
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "step": 16, "reason": None}))
    (tmp_path / "tiny_vit" / "results.jsonl").unlink()
    assert engine_run(tmp_path, *ONE_RUN) == 0
    err = capsys.readouterr().err
    assert f"checkpoint step 16 of {(run_dir / 'checkpoints').absolute()} is unusable (checksum mismatch" in err
    assert "resuming from step 12" in err
    assert status(run_dir)["eval_loss"] == expected_loss  # retrained 12 -> 16, same result
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("unusable-16-")]


def test_a_garbled_results_line_is_reported_with_its_line_and_the_rest_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for run_id in ("a", "b"):
        append_result(tmp_path, {"run_id": run_id, "sparsity": 0.5, "nonzeros": 10, "data": 5, "loss": 1.0})
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"run_id": "x", "loss": 1.0 oops', lines[1]]) + "\n")
    capsys.readouterr()
    assert [row["run_id"] for row in sweep_rows(tmp_path)] == ["a", "b"]
    assert f"{path}:2: not valid JSON" in capsys.readouterr().err
    append_result(tmp_path, {"run_id": "c", "sparsity": 0.5, "nonzeros": 10, "data": 5, "loss": 1.0})
    assert [row["run_id"] for row in sweep_rows(tmp_path)] == ["a", "b", "c"]
    assert path.read_text().splitlines()[1] == '{"run_id": "x", "loss": 1.0 oops'  # kept as found


# --- divergence ----------------------------------------------------------------------------------


def test_an_injected_nan_fails_the_run_the_sweep_continues_and_a_retry_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_run_ids()
    monkeypatch.setenv("ENGINE_TEST_NAN_AT", f"6@{first}")
    assert engine_run(tmp_path, *TWO_RUNS) == 1
    err = capsys.readouterr().err
    assert f"failed run {first} at step 6: loss is nan at step 6" in " ".join(err.split())
    sweep = tmp_path / "tiny_vit"
    assert status(sweep / first) == {"state": "failed", "step": 6, "reason": "loss is nan at step 6"}
    assert status(sweep / second)["state"] == "done"  # failure_policy: continue
    assert [row["run_id"] for row in sweep_rows(sweep)] == [second]

    assert engine_run(tmp_path, *TWO_RUNS) == 0  # a failed run is not retried by default
    assert "trained 0" in capsys.readouterr().err

    monkeypatch.delenv("ENGINE_TEST_NAN_AT")
    assert engine_run(tmp_path, *TWO_RUNS, "--retry-failed") == 0
    assert status(sweep / first)["state"] == "done"
    retried = {row["run_id"]: row["loss"] for row in sweep_rows(sweep)}
    # The retry resumed from step 4 (saved before the NaN) and ends where a clean run ends.
    assert engine_run(tmp_path / "clean", *TWO_RUNS) == 0
    clean = {row["run_id"]: row["loss"] for row in sweep_rows(tmp_path / "clean" / "tiny_vit")}
    assert retried == clean


def test_fail_fast_stops_the_sweep_at_the_first_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_TEST_NAN_AT", "3")  # every run diverges at step 3
    assert engine_run(tmp_path, *TWO_RUNS, "--set", "run.failure_policy=fail_fast") == 1
    err = capsys.readouterr().err
    assert "stopped at the first failure" in err
    states = sorted(status(p.parent)["state"] for p in (tmp_path / "tiny_vit").glob("*/status.json"))
    assert states == ["failed"]  # the second run never started

    # Losses are read back every few steps, so step 4's checkpoint was saved with NaN parameters
    # before the divergence at step 3 was seen: a retry must not resume from it.
    monkeypatch.delenv("ENGINE_TEST_NAN_AT")
    assert engine_run(tmp_path, *TWO_RUNS, "--retry-failed") == 0
    err = capsys.readouterr().err
    assert "checkpoint step 4" in err and "non-finite values" in err and "starting from step 0" in err


def test_a_really_diverging_learning_rate_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert engine_run(tmp_path, *ONE_RUN, "--set", "optimizer.learning_rate.value=1e38") == 1
    run_status = status(only_run_dir(tmp_path))
    assert run_status["state"] == "failed" and run_status["step"] <= 16
    assert "loss is" in run_status["reason"]


# --- drift ---------------------------------------------------------------------------------------


def write_array_spec(directory: Path, seed: int = 0) -> Path:
    """A tiny ViT on the user's own image arrays (a data file whose contents can change)."""
    rng = np.random.default_rng(seed)
    np.savez(directory / "images.npz", images=rng.normal(size=(192, 8, 8, 3)).astype(np.float32),
             labels=rng.integers(0, 4, size=192))
    spec = (FIXTURES / "tiny_vit.yaml").read_text().replace(
        "source: {kind: synthetic_images, seed: 0, eval_examples: 32, eval_batch_size: 16}",
        "source: {kind: image_arrays, paths: [images.npz], eval_fraction: 0.25, eval_batch_size: 16}",
    )
    assert "image_arrays" in spec
    path = directory / "arrays.yaml"
    path.write_text(spec)
    return path


def test_resuming_after_a_data_file_changed_refuses_with_a_diff_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_array_spec(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv("ENGINE_TEST_NAN_AT", "10")  # stops the run after its step-8 checkpoint
    assert engine_run(out, *ONE_RUN, spec=spec) == 1
    monkeypatch.delenv("ENGINE_TEST_NAN_AT")
    run_dir = only_run_dir(out)
    stored = (run_dir / "spec.yaml").read_text()
    assert "images.npz:" in stored  # the record names the data file with its sha256
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "step": 8, "reason": None}))
    write_array_spec(tmp_path, seed=1)  # same file name, other contents
    capsys.readouterr()

    assert engine_run(out, *ONE_RUN, spec=spec) == 1
    err = capsys.readouterr().err
    assert "spec drift" in err and "--allow-drift" in err and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "data_files.images.npz:" in line]
    assert " -> " in line
    assert status(run_dir)["state"] == "running"  # nothing was trained

    assert engine_run(out, *ONE_RUN, "--allow-drift", spec=spec) == 0
    assert "resumes although its spec drifted" in capsys.readouterr().err
    assert status(run_dir)["state"] == "done"


def test_a_stored_spec_that_differs_after_an_upgrade_is_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_TEST_NAN_AT", "10")
    assert engine_run(tmp_path, *ONE_RUN) == 1
    monkeypatch.delenv("ENGINE_TEST_NAN_AT")
    run_dir = only_run_dir(tmp_path)
    record = run_dir / "spec.yaml"
    # An older engine wrote another default and another model shape for the same run id.
    record.write_text(record.read_text().replace("b2: 0.999", "b2: 0.98").replace("mlp_dim: 64", "mlp_dim: 60"))
    capsys.readouterr()
    assert engine_run(tmp_path, *ONE_RUN, "--retry-failed") == 1
    err = capsys.readouterr().err
    assert "spec.optimizer.b2: 0.98 -> 0.999" in err
    assert "dims.mlp_dim: 60 -> 64" in err


# --- disks ---------------------------------------------------------------------------------------


def test_an_output_directory_that_cannot_be_created_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Tests run as root in CI, and root ignores chmod: a path under a regular file cannot be
    # created by anyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert engine_run(blocker / "runs", *ONE_RUN) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: output directory") and "Not a directory" in err
    assert "Traceback" not in err and blocker.read_text() == "not a directory"


# (where the disk fills, how often that point is passed first, the newest step that must verify)
@pytest.mark.parametrize("point, arrival, kept_step", [
    ("checkpoint-manifest", 2, 4),  # step 8's manifest cannot be written: step 4 stands
    ("file-replace", 4, 4),         # the status write after step 4's save
    ("results-write", 1, 16),       # the result line of a finished run
])
def test_a_full_disk_is_one_clear_error_and_the_previous_checkpoint_survives(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, point: str,
    arrival: int, kept_step: int,
) -> None:
    monkeypatch.setenv("ENGINE_TEST_ENOSPC_AT", f"{point}:{arrival}")
    assert engine_run(tmp_path, *ONE_RUN) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    from engine.training.checkpoint import verify_manifest

    checkpoints = only_run_dir(tmp_path) / "checkpoints"
    assert verify_manifest(checkpoints / str(kept_step)) is None  # the last complete one is whole
    monkeypatch.delenv("ENGINE_TEST_ENOSPC_AT")
    assert engine_run(tmp_path, *ONE_RUN) == 0  # space again: the same command finishes
    text = (tmp_path / "tiny_vit" / "results.jsonl").read_text()
    assert len(text.splitlines()) == 1 and json.loads(text)["steps"] == 16


@pytest.mark.slow
def test_a_real_full_filesystem_stops_with_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    """A 400 kB tmpfs holds one checkpoint of the tiny run, not two (needs mount rights: root in
    a container that allows it; elsewhere the injected ENOSPC test above covers the same path)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        command = [sys.executable, "-m", "engine.cli", "run", str(FIXTURES / "tiny_vit.yaml"),
                   "--set", f"run.output_dir={mount_point}", *ONE_RUN]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert done.returncode == 1
        assert "checkpoint 8 not written: No space left on device" in done.stderr
        from engine.training.checkpoint import verify_manifest

        assert verify_manifest(only_run_dir(mount_point) / "checkpoints" / "4") is None
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
