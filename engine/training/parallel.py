"""One run over many devices with JAX's own SPMD: the device mesh, sharding rules, multi-host start.

A `Layout` is a mesh with two axes, `data` and `fsdp` (spec/parallelism.py), plus the rules that
split parameters over it. Batches are split along their first dimension over both axes; a
parameter is split as the first rule matching its '/'-joined path says, or replicated. Optimizer
state and masks are pytrees that embed parameter-shaped leaves under the same dict keys as the
parameters (e.g. `inner_state[0].mu['encoder']['block_0']...`): a state leaf whose dict-key path
and shape are a parameter's is split like that parameter, every other leaf (step counters,
Adafactor's unused factored rows) is replicated. jit then compiles one SPMD program for the mesh.

Without a `parallelism:` section the mesh is the first device alone, which computes exactly what
the engine computed before meshes existed.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from engine.errors import UserError
from spec.parallelism import MeshSpec, ParallelismSpec

PyTree = Any
# What the compiled train step takes: host arrays on one process, global arrays across processes.
StepBatch = Mapping[str, np.ndarray | jax.Array]
MESH_AXES = ("data", "fsdp")
BATCH_SPEC = PartitionSpec(MESH_AXES)  # the batch dimension is split over both axes
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a run's arrays live: the mesh and the parameter rules (pattern, spec), in order."""

    mesh: Mesh
    rules: tuple[tuple[re.Pattern[str], PartitionSpec], ...] = ()

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, BATCH_SPEC)

    @property
    def batch_ways(self) -> int:
        """Into how many parts a batch is split."""
        return math.prod(self.mesh.shape[axis] for axis in MESH_AXES)


# --- mesh ------------------------------------------------------------------------------------------


def axis_sizes(mesh: MeshSpec, device_count: int, where: str) -> tuple[int, int]:
    """(data, fsdp) for `device_count` devices; `auto` takes what the other axis leaves."""
    data, fsdp = mesh.data, mesh.fsdp
    if data == "auto" or fsdp == "auto":
        fixed = fsdp if data == "auto" else data
        assert isinstance(fixed, int)
        if device_count % fixed:
            raise UserError(f"{where}: parallelism.mesh: {device_count} devices cannot be split into groups of {fixed}")
        other = device_count // fixed
        data, fsdp = (other, fixed) if data == "auto" else (fixed, other)
    assert isinstance(data, int) and isinstance(fsdp, int)
    if data * fsdp > device_count:
        raise UserError(
            f"{where}: parallelism.mesh {{data: {data}, fsdp: {fsdp}}} needs {data * fsdp} devices, "
            f"this process sees {device_count} ({jax.default_backend()})"
        )
    return data, fsdp


def build_mesh(mesh: MeshSpec, where: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    data, fsdp = axis_sizes(mesh, len(devices), where)
    # Auto axes: the compiler propagates shardings from the jit boundaries (no sharding in types).
    return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=(AxisType.Auto,) * 2,
                         devices=devices[: data * fsdp])


def single_device_layout() -> Layout:
    """The default: the first device alone."""
    return Layout(jax.make_mesh((1, 1), MESH_AXES, axis_types=(AxisType.Auto,) * 2,
                                devices=jax.devices()[:1]))


# --- rules -----------------------------------------------------------------------------------------


def dict_path(keypath: Sequence[Any]) -> str:
    """'/'-joined dict keys of a pytree key path: the parameter path of a params leaf, and of the
    parameter-shaped leaves inside optimizer state (attribute and index keys are skipped)."""
    return "/".join(str(key.key) for key in keypath if isinstance(key, jax.tree_util.DictKey))


def param_spec(path: str, shape: tuple[int, ...], layout: Layout, where: str) -> PartitionSpec:
    """The spec of the first rule matching `path`, checked against the tensor's shape."""
    for index, (pattern, spec) in enumerate(layout.rules):
        if not pattern.fullmatch(path):
            continue
        rule = f"{where}: parallelism.rules[{index}] ({pattern.pattern!r})"
        if len(spec) > len(shape):
            raise UserError(f"{rule} gives {len(spec)} dimensions to {path}, which has shape {list(shape)}")
        for dim, axis in enumerate(spec):
            if axis is not None and shape[dim] % layout.mesh.shape[axis]:
                raise UserError(
                    f"{rule} splits dimension {dim} of {path} (shape {list(shape)}) over {axis}="
                    f"{layout.mesh.shape[axis]} devices, which does not divide {shape[dim]}"
                )
        return spec
    return PartitionSpec()


def param_specs(params: PyTree, layout: Layout, where: str) -> dict[str, tuple[tuple[int, ...], PartitionSpec]]:
    """Parameter path -> (shape, spec) for every parameter."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        dict_path(keypath): (tuple(leaf.shape), param_spec(dict_path(keypath), tuple(leaf.shape), layout, where))
        for keypath, leaf in leaves
    }


def state_shardings(state: PyTree, params: PyTree, layout: Layout, where: str = "run") -> PyTree:
    """A NamedSharding for every leaf of `state` (any pytree holding params, masks, optimizer
    state): split like the parameter with the same dict-key path and shape, else replicated."""
    specs = param_specs(params, layout, where)

    def sharding(keypath: Sequence[Any], leaf: Any) -> NamedSharding:
        found = specs.get(dict_path(keypath))
        if found is not None and found[0] == tuple(np.shape(leaf)):
            return NamedSharding(layout.mesh, found[1])
        return layout.replicated

    return jax.tree_util.tree_map_with_path(sharding, state)


def with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
    """Shape/dtype structs carrying shardings: the restore target that makes Orbax lay a
    checkpoint out on this mesh, whatever mesh it was saved from."""
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        abstract, shardings)


def build_layout(spec: ParallelismSpec, params: PyTree, batch_size: int, where: str) -> Layout:
    """The layout of a run, checked now against its parameter shapes and batch size so that a
    bad rule is an error before any training."""
    layout = Layout(build_mesh(spec.mesh, where),
                    tuple((re.compile(rule.pattern), PartitionSpec(*rule.spec)) for rule in spec.rules))
    if batch_size % layout.batch_ways:
        raise UserError(
            f"{where}: data.batch_size {batch_size} cannot be split over parallelism.mesh "
            f"data x fsdp = {layout.batch_ways} devices"
        )
    param_specs(params, layout, where)
    return layout


# --- batches ---------------------------------------------------------------------------------------


def shard_batch(batch: dict[str, np.ndarray], layout: Layout) -> dict[str, jax.Array]:
    """A host batch (the whole global batch, which every process computes identically from the
    step) laid out over the mesh: each device gets its slice. A batch that does not split evenly
    (an odd-sized evaluation batch) is replicated instead."""
    def place(array: np.ndarray) -> jax.Array:
        array = np.asarray(array)
        sharding = layout.batch_sharding if array.shape[0] % layout.batch_ways == 0 else layout.replicated
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return {name: place(array) for name, array in batch.items()}


def step_batch(batch: dict[str, np.ndarray], layout: Layout, local: bool = False) -> StepBatch:
    """A training batch as the compiled step takes it. On one process, the host arrays: the step's
    input shardings place them (about 10x cheaper per step than placing them here, which matters
    at a few ms per step); across processes, global arrays: from the whole batch (shard_batch), or
    when `local`, from this process's consecutive share of the rows (the prepared-cache sources
    read only that share)."""
    if jax.process_count() == 1:
        return batch
    if not local:
        return shard_batch(batch, layout)
    return {name: jax.make_array_from_process_local_data(layout.batch_sharding, np.asarray(array))
            for name, array in batch.items()}


def replicate(tree: PyTree, layout: Layout) -> PyTree:
    """Host numbers (the same on every process) as arrays on every device of the mesh."""
    def place(value: Any) -> jax.Array:
        array = np.asarray(jnp.asarray(value))  # JAX's dtypes: int32 and float32
        return jax.make_array_from_callback(array.shape, layout.replicated, lambda index: array[index])

    return jax.tree.map(place, tree)


# --- multi-host ------------------------------------------------------------------------------------

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
PROCESS_COUNT_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
AUTO_ENV = "ENGINE_DISTRIBUTED"  # "auto": let JAX detect the cluster (TPU pod, SLURM srun, Open MPI)


def distributed_settings(environ: dict[str, str]) -> dict[str, Any] | None:
    """jax.distributed.initialize arguments from the environment; None when this is a one-process
    run. Explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, all three. Detected: ENGINE_DISTRIBUTED=auto."""
    names = (COORDINATOR_ENV, PROCESS_COUNT_ENV, PROCESS_ID_ENV)
    present = [name for name in names if environ.get(name)]
    if environ.get(AUTO_ENV) == "auto" and not present:
        return {}
    if environ.get(AUTO_ENV) not in (None, "", "auto"):
        raise UserError(f"{AUTO_ENV}={environ[AUTO_ENV]!r}: the only value is 'auto'")
    if not present:
        return None
    missing = [name for name in names if name not in present]
    if missing:
        raise UserError(f"multi-host run: {', '.join(present)} set but {', '.join(missing)} missing; set all three")
    try:
        count, process_id = int(environ[PROCESS_COUNT_ENV]), int(environ[PROCESS_ID_ENV])
    except ValueError:
        raise UserError(f"{PROCESS_COUNT_ENV} and {PROCESS_ID_ENV} must be integers, got "
                        f"{environ[PROCESS_COUNT_ENV]!r} and {environ[PROCESS_ID_ENV]!r}") from None
    if not 0 <= process_id < count:
        raise UserError(f"{PROCESS_ID_ENV}={process_id} must lie in [0, {PROCESS_COUNT_ENV}={count})")
    return {"coordinator_address": environ[COORDINATOR_ENV], "num_processes": count, "process_id": process_id}


def initialize_distributed(environ: dict[str, str] | None = None) -> bool:
    """Join the multi-host cluster the environment describes (before any other JAX call);
    False when the environment describes none. Every process then sees every device."""
    settings = distributed_settings(dict(os.environ if environ is None else environ))
    if settings is None:
        return False
    jax.distributed.initialize(**settings)
    log.info("jax.distributed: process %d of %d, %d devices", jax.process_index(), jax.process_count(),
             jax.device_count())
    return True


def is_primary_process() -> bool:
    """Process 0 writes the run's own files (metrics, status); Orbax coordinates checkpoints."""
    return jax.process_index() == 0


def agree(decision: bool) -> bool:
    """Process 0's decision, on every process of a multi-host run (they must take the same
    branches to meet in the same collectives)."""
    if jax.process_count() == 1:
        return decision
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(decision)))
