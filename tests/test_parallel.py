"""Sharded runs: the parallelism spec, sharding rules, and the same run on 1, 4 and 8 devices.

Multi-device checks run tests/parallel_worker.py in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=N (the device count is fixed when JAX starts);
the 1-device reference runs in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec
from parallel_worker import SPEC, train  # tests/ is on sys.path under pytest

from engine.errors import UserError
from engine.sparsity import GradualSchedule, Unstructured, masked_pruning
from engine.training.parallel import Layout, axis_sizes, build_layout, distributed_settings, state_shardings
from spec.loading import check_file
from spec.parallelism import MeshSpec, ParallelismSpec

WORKER = Path(__file__).parent / "parallel_worker.py"
FSDP_RULES = 'parallelism.rules=[{pattern: ".*kernel", spec: [fsdp]}]'
FLOAT32_RTOL = 1e-5  # the same sums in another order: float32 rounding, nothing more


# --- spec and rules, in this process ---------------------------------------------------------------


def test_mesh_spec_defaults_to_one_device_and_allows_one_auto_axis() -> None:
    assert ParallelismSpec().mesh == MeshSpec(data=1, fsdp=1)
    assert axis_sizes(MeshSpec(data="auto", fsdp=2), 8, "run") == (4, 2)
    assert axis_sizes(MeshSpec(data=2, fsdp="auto"), 8, "run") == (2, 4)
    with pytest.raises(UserError, match="needs 8 devices, this process sees 4"):
        axis_sizes(MeshSpec(data=2, fsdp=4), 4, "run")
    with pytest.raises(UserError, match="cannot be split into groups of 3"):
        axis_sizes(MeshSpec(data="auto", fsdp=3), 8, "run")


@pytest.mark.parametrize(("section", "line", "message"), [
    ("parallelism:\n  mesh: {data: auto, fsdp: auto}\n", 2, "only one mesh axis can be `auto`"),
    ("parallelism:\n  rules:\n    - {pattern: 'kernel(', spec: [fsdp]}\n", 3, "not a regular expression"),
    ("parallelism:\n  rules:\n    - {pattern: '.*', spec: [fsdp, fsdp]}\n", 3, "a mesh axis can split only one"),
    ("parallelism:\n  rules:\n    - {pattern: '.*', spec: [model]}\n", 3, "expected 'data' or 'fsdp', got the text 'model'"),
])
def test_bad_parallelism_sections_name_their_line(tmp_path: Path, section: str, line: int, message: str) -> None:
    base = (Path(__file__).parent / "fixtures" / "parallel" / "tiny_run.yaml").read_text()
    path = tmp_path / "spec.yaml"
    path.write_text(section + base)
    [issue] = check_file(path)
    assert issue.origin.line == line and message in issue.message, str(issue)


def _abstract_layout(data: int, fsdp: int, rules: list[tuple[str, PartitionSpec]]) -> Layout:
    import re

    mesh = AbstractMesh((data, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    return Layout(mesh, tuple((re.compile(pattern), spec) for pattern, spec in rules))  # type: ignore[arg-type]


def test_optimizer_state_and_masks_are_sharded_like_their_parameters() -> None:
    params = {"block": {"fc": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones((4,))}}, "pos": jnp.ones((1, 8))}
    sparsified = {"block": {"fc": {"kernel": True, "bias": False}}, "pos": False}
    schedule = GradualSchedule(target=0.5, start_step=0, end_step=4, update_interval=2)  # a pruning run has masks
    optimizer = masked_pruning(optax.adamw(1e-3), sparsified, schedule, Unstructured())
    state = (params, optimizer.init(params))  # like TrainState: params not under a dict key
    layout = _abstract_layout(2, 4, [(".*kernel", PartitionSpec("fsdp"))])
    shardings = state_shardings(state, params, layout)
    flat = {jax.tree_util.keystr(path): sharding.spec
            for path, sharding in jax.tree_util.tree_flatten_with_path(shardings)[0]}
    kernel_leaves = {path: spec for path, spec in flat.items() if "['kernel']" in path}
    # the parameter, the mask, adam's mu and nu: four kernel-shaped leaves, all split over fsdp
    assert len(kernel_leaves) == 4 and set(kernel_leaves.values()) == {PartitionSpec("fsdp")}
    others = {path: spec for path, spec in flat.items() if "['kernel']" not in path}
    assert others and set(others.values()) == {PartitionSpec()}  # biases, counts, scalar masks


def test_rules_that_do_not_fit_are_errors_before_training() -> None:
    params = {"fc": {"kernel": jax.ShapeDtypeStruct((6, 4), jnp.float32)}}
    one_device = ParallelismSpec()
    assert build_layout(one_device, params, batch_size=8, where="run x").batch_ways == 1
    layout = _abstract_layout(1, 4, [(".*kernel", PartitionSpec("fsdp"))])
    from engine.training.parallel import param_spec

    with pytest.raises(UserError, match=r"rules\[0\] .* splits dimension 0 of fc/kernel \(shape \[6, 4\]\) over fsdp=4"):
        param_spec("fc/kernel", (6, 4), layout, "run x")
    layout = _abstract_layout(1, 4, [(".*kernel", PartitionSpec(None, None, "fsdp"))])
    with pytest.raises(UserError, match="gives 3 dimensions to fc/kernel"):
        param_spec("fc/kernel", (6, 4), layout, "run x")


def test_engine_run_refuses_a_mesh_this_machine_lacks_before_claiming_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from engine.cli import main

    spec = Path(__file__).parent / "fixtures" / "parallel" / "tiny_run.yaml"
    code = main(["run", str(spec), "--set", f"run.output_dir={tmp_path}", "--set", "parallelism.mesh.data=2"])
    assert code == 1
    assert "parallelism.mesh {data: 2, fsdp: 1} needs 2 devices, this process sees 1" in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "tiny_sharded").iterdir()] == ["plan.json"]


def test_distributed_settings_come_from_the_environment() -> None:
    assert distributed_settings({}) is None
    full = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed_settings(full) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert distributed_settings({"ENGINE_DISTRIBUTED": "auto"}) == {}
    with pytest.raises(UserError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID missing"):
        distributed_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    with pytest.raises(UserError, match=r"must lie in \[0, JAX_NUM_PROCESSES=4\)"):
        distributed_settings(full | {"JAX_PROCESS_ID": "4"})


# --- the same run on several devices, in subprocesses --------------------------------------------


def _worker(devices: int, tasks: list[dict], extra_env: dict[str, str] | None = None,
            wait: bool = True) -> list[dict] | subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu", **(extra_env or {})}
    command = [sys.executable, str(WORKER), json.dumps(tasks)]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _losses(result: dict) -> list[float]:
    return [value for record in result["metrics"] for key, value in sorted(record.items()) if key.endswith("loss")]


def _cut_after_step_8(run_dir: Path, copy_to: Path) -> Path:
    """A copy of a finished run as if it had been stopped after its step-8 checkpoint: the
    step-16 checkpoint is removed, so the next train_run resumes from step 8."""
    shutil.copytree(run_dir, copy_to)
    shutil.rmtree(copy_to / "checkpoints" / "16")
    return copy_to


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The run on this process's one device, straight through (checkpoints at steps 8 and 16)."""
    run_dir = tmp_path_factory.mktemp("one_device") / "run"
    straight = train(run_dir, [])
    assert straight["devices"] == 1 and straight["mesh"] == {"data": 1, "fsdp": 1}
    return {"straight": straight, "run_dir": run_dir}


def test_4_devices_same_losses_and_checkpoints_move_between_device_counts(reference: dict, tmp_path: Path) -> None:
    fsdp = ["parallelism.mesh.data=2", "parallelism.mesh.fsdp=2", FSDP_RULES]
    saved_on_1 = _cut_after_step_8(reference["run_dir"], tmp_path / "saved_on_1")
    sharded, resumed_on_4 = _worker(4, [
        {"run_dir": str(tmp_path / "sharded"), "overrides": fsdp},
        {"run_dir": str(saved_on_1), "overrides": fsdp},
    ])
    expected = _losses(reference["straight"])
    assert sharded["mesh"] == {"data": 2, "fsdp": 2}
    assert _losses(sharded) == pytest.approx(expected, rel=FLOAT32_RTOL)
    # 1 -> 4: the checkpoint saved on one device resumes on a 2x2 mesh and ends where 1 device ends
    assert resumed_on_4["resumed_from"] == 8
    assert _losses(resumed_on_4) == pytest.approx(expected, rel=FLOAT32_RTOL)
    # 4 -> 1: the step-8 checkpoint saved with parameters split over 4 devices resumes on one
    resumed_on_1 = train(_cut_after_step_8(tmp_path / "sharded", tmp_path / "saved_on_4"), [])
    assert resumed_on_1["resumed_from"] == 8 and resumed_on_1["devices"] == 1
    assert _losses(resumed_on_1) == pytest.approx(expected, rel=FLOAT32_RTOL)
    # inspection reads the 4-device checkpoint's parameters onto this one device, exactly as a
    # full restore of the state with the model's target does
    from helpers import final_params

    from engine.planning.plan import plan_experiment
    from engine.training.build import build_setup
    from engine.training.checkpoint import read_params

    inspected = read_params(tmp_path / "sharded" / "checkpoints" / "16")
    _, restored = final_params(tmp_path / "sharded", build_setup(plan_experiment(SPEC, [])[0]))
    for a, b in zip(jax.tree.leaves(inspected), jax.tree.leaves(restored), strict=True):
        assert len(a.sharding.device_set) == 1
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.slow
def test_8_devices_with_fsdp_give_the_same_losses(reference: dict, tmp_path: Path) -> None:
    [sharded] = _worker(8, [{"run_dir": str(tmp_path / "run"),
                             "overrides": ["parallelism.mesh.data=auto", "parallelism.mesh.fsdp=4", FSDP_RULES]}])
    assert sharded["devices"] == 8 and sharded["mesh"] == {"data": 2, "fsdp": 4}
    assert _losses(sharded) == pytest.approx(_losses(reference["straight"]), rel=FLOAT32_RTOL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_all(processes: list[subprocess.Popen], timeout: float) -> list[tuple[str, str]]:
    """Outputs of every process; when one fails, the others (blocked in a collective with the
    dead peer until jax.distributed's heartbeat gives up) are stopped at once."""
    deadline = time.monotonic() + timeout
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        if any(process.poll() not in (None, 0) for process in processes):
            break
        time.sleep(0.5)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    return [process.communicate() for process in processes]


@pytest.mark.slow
def test_two_processes_train_one_run_as_a_jax_distributed_cluster(reference: dict, tmp_path: Path) -> None:
    """Two local CPU processes of 2 devices each join through jax.distributed (a localhost
    coordinator, gloo CPU collectives) and train one run over a 2x2 mesh spanning both. A
    checkpoint time floor makes every periodic save a decision process 0 broadcasts (the save is
    collective: the processes must agree or hang)."""
    address = f"127.0.0.1:{_free_port()}"
    task = [{"run_dir": str(tmp_path / "run"), "overrides": ["parallelism.mesh.data=2", "parallelism.mesh.fsdp=2", FSDP_RULES,
                                                             "run.checkpoint_min_seconds=0.001"]}]
    processes = [
        _worker(2, task, {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank)},
                wait=False)
        for rank in range(2)
    ]
    outputs = _wait_all(processes, timeout=600)
    # training itself went through on both: process 0's metrics match one device's losses
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert _losses({"metrics": metrics}) == pytest.approx(_losses(reference["straight"]), rel=FLOAT32_RTOL)
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("{"))) for out, _ in outputs]
    assert [r["process"] for r in results] == [0, 1] and all(r["devices"] == 4 for r in results)
    for result in results:
        assert result["final_eval_loss"] == pytest.approx(reference["straight"]["final_eval_loss"], rel=FLOAT32_RTOL)


def _png_records(directory: Path, count: int) -> None:
    """Parquet records of encoded PNG images (8x8 RGB) with 4 classes, as a user would bring."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"image": encoded, "label": (images.mean(axis=(1, 2, 3)) // 64).astype(int).tolist()}),
                   directory / "part-0.parquet")


@pytest.mark.slow
def test_two_processes_read_disjoint_shares_of_a_prepared_cache(tmp_path: Path) -> None:
    """Each process of a 2-process jax.distributed run reads only its half of every batch from the
    prepared cache; the losses are those of one process reading whole batches."""
    _png_records(tmp_path / "images", 256)
    source = f"data.source={{kind: image_records, paths: [{tmp_path / 'images'}], eval_batch_size: 16}}"
    one = train(tmp_path / "one", [source])  # prepares the cache too
    assert one["process_local"] is False
    address = f"127.0.0.1:{_free_port()}"
    task = [{"run_dir": str(tmp_path / "run"), "overrides": [source, "parallelism.mesh.data=4"]}]
    processes = [
        _worker(2, task, {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank)},
                wait=False)
        for rank in range(2)
    ]
    outputs = _wait_all(processes, timeout=600)
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("{"))) for out, _ in outputs]
    assert all(r["process_local"] for r in results) and [r["process"] for r in results] == [0, 1]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert _losses({"metrics": metrics}) == pytest.approx(_losses(one), rel=FLOAT32_RTOL)


@pytest.mark.slow
def test_two_processes_run_a_sweep_through_engine_run(reference: dict, tmp_path: Path) -> None:
    """`engine run` on a 2-process cluster: process 0 claims and writes, both train the runs."""
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    command = [sys.executable, "-m", "engine.cli", "run", str(SPEC), "--set", f"run.output_dir={out}",
               "--set", "parallelism.mesh.data=2", "--set", "parallelism.mesh.fsdp=2", "--set", FSDP_RULES,
               "--set", "sweep.grid={seed: [0, 1]}"]
    processes = [
        subprocess.Popen(command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={
            **os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
            "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank)})
        for rank in range(2)
    ]
    outputs = _wait_all(processes, timeout=600)
    for process in processes:
        assert process.returncode == 0, '\n=====\n'.join(e[-2500:] for _, e in outputs)
    rows = [json.loads(line) for line in (out / "tiny_sharded" / "results.jsonl").read_text().splitlines()]
    assert sorted(row["coordinates"]["seed"] for row in rows) == [0, 1]  # each run once
    seed_0 = next(row for row in rows if row["coordinates"]["seed"] == 0)
    assert seed_0["loss"] == pytest.approx(reference["straight"]["final_eval_loss"], rel=FLOAT32_RTOL)
    assert not list(out.rglob("claim.json"))  # released
