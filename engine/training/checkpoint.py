"""Orbax checkpoints of a run, with our own checksum manifest per step.

Orbax commits a step atomically (a kill mid-save leaves a tmp directory, cleaned up on the next
start), but it keeps no content checksum: a flipped bit restores silently with wrong values and a
truncated metadata file leaves an unrestorable step listed as latest (RELIABILITY.md). So once
a save has committed we hash every file of the step into `<step>/manifest.sha256.json`, and on
restore we walk back from the newest step to the first one whose files verify and that restores.
Every step skipped is reported on stderr (`warning: checkpoint step 16 of ... is unusable (...)`),
and when training resumes, the unusable steps newer than the one restored are moved aside to
`<dir>/unusable-<step>-<time>/` (kept for a post-mortem, invisible to Orbax) so the step can be
saved again.

A checkpoint holds two items: `state` (params, optimizer state with masks, step: a pytree) and
`meta` (JSON: run id, step, anything else the loop wants to read back without arrays).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from engine import faults
from engine.results import warn

MANIFEST = "manifest.sha256.json"
# How the file system's refusals read inside Orbax/TensorStore errors (a ValueError from a thread).
_DISK_ERRORS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                "Permission denied": errno.EACCES, "Read-only file system": errno.EROFS}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission): an OSError the sweep turns
    into one line. The steps committed before it are untouched."""


def _as_disk_error(error: Exception, step_dir: Path) -> OSError | None:
    if isinstance(error, OSError):
        return error
    text = str(error)
    for phrase, code in _DISK_ERRORS.items():
        if phrase in text:
            return CheckpointWriteError(code, f"checkpoint {step_dir.name} not written: {phrase}", str(step_dir))
    return None


class _QuietDiskErrors(logging.Filter):
    """Drops Orbax's background-thread error logs (whole tracebacks with TensorStore specs) about
    full or unwritable disks: the main thread reports the same failure in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        return not any(phrase in text for phrase in _DISK_ERRORS)


_quiet = _QuietDiskErrors()


@dataclass(frozen=True)
class Restored:
    step: int
    state: Any
    meta: dict[str, Any]


def _file_digests(step_dir: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(MANIFEST):  # nor its temporary file
            digests[str(path.relative_to(step_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def write_manifest(step_dir: Path) -> None:
    digests = json.dumps(_file_digests(step_dir), indent=1, sort_keys=True)
    tmp = step_dir / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(digests)
        handle.flush()
        os.fsync(handle.fileno())
    faults.reached("checkpoint-manifest")
    tmp.replace(step_dir / MANIFEST)  # atomic: a manifest is either whole or absent


def verify_manifest(step_dir: Path) -> str | None:
    """None when every file matches its recorded digest; otherwise what is wrong."""
    manifest = step_dir / MANIFEST
    if not manifest.is_file():
        return "no checksum manifest (the save did not finish)"
    try:
        expected = json.loads(manifest.read_text())
    except (OSError, ValueError) as error:
        return f"unreadable checksum manifest: {error}"
    actual = _file_digests(step_dir)
    for name, digest in expected.items():
        if name not in actual:
            return f"missing file {name}"
        if actual[name] != digest:
            return f"checksum mismatch in {name}"
    return None


class CheckpointStore:
    """The checkpoints of one run: asynchronous saves, verified restores."""

    def __init__(self, directory: Path, keep: int, asynchronous: bool = True) -> None:
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=asynchronous,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )
        self._unhashed: list[int] = []
        logging.getLogger("absl").addFilter(_quiet)

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts saving `state` at `step` in the background; manifests of earlier saves are
        written first (their commit is awaited, which Orbax does before a new save anyway).
        `state` must not be donated to a later step before `wait`: pass a copy."""
        self._finish_manifests()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_savable(state)), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        except Exception as error:
            raise self._disk_error_or(error, step) from None
        self._unhashed.append(step)
        faults.reached("checkpoint-save")

    def wait(self) -> None:
        """Blocks until every save has committed and has its manifest."""
        self._finish_manifests()

    def _finish_manifests(self) -> None:
        if not self._unhashed:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            failed, self._unhashed = self._unhashed[-1], []
            raise self._disk_error_or(error, failed) from None
        for step in self._unhashed:
            step_dir = self.directory / str(step)
            # One writer: on a multi-host run every process sees the same committed step.
            if step_dir.is_dir() and jax.process_index() == 0:  # max_to_keep may have removed it
                write_manifest(step_dir)
        self._unhashed.clear()

    def steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """The newest step that verifies and restores into `abstract_state`'s structure;
        None when there is none. Skipped steps are reported with the reason and moved aside
        (training continues from the step restored and will save the newer steps again)."""
        unusable = []
        restored = None
        for step in reversed(self.steps()):
            problem = verify_manifest(self.directory / str(step))
            if problem is None:
                try:
                    restored = self.restore(step, abstract_state)
                except Exception as error:  # noqa: BLE001 - any failure means: try an older step
                    problem = f"restore failed: {type(error).__name__}: {_first_line(error)}"
                else:
                    problem = _non_finite(restored.state)
                    if problem is None:
                        break
                    restored = None
            self._report_unusable(step, problem)
            unusable.append(step)
        for step in unusable:
            self._move_aside(step)
        if unusable:
            where = f"resuming from step {restored.step}" if restored else "no usable checkpoint: starting from step 0"
            warn(f"{self.directory}: {where}")
        return restored

    def _report_unusable(self, step: int, problem: str) -> None:
        warn(f"checkpoint step {step} of {self.directory} is unusable ({problem}); trying an older one")

    def _move_aside(self, step: int) -> None:
        step_dir = self.directory / str(step)
        if step_dir.is_dir():
            step_dir.rename(self.directory / f"unusable-{step}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        self._manager.reload()

    def restore(self, step: int, abstract_state: Any) -> Restored:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return Restored(step=step, state=restored.state, meta=dict(restored.meta))

    def latest_verified_step(self) -> int | None:
        """The newest step whose files verify (read-only: nothing is moved); steps skipped on
        the way are reported."""
        for step in reversed(self.steps()):
            problem = verify_manifest(self.directory / str(step))
            if problem is None:
                return step
            self._report_unusable(step, problem)
        return None

    def restore_params(self, step: int) -> Any:
        """The parameters saved at `step` onto this process's first device, without knowing the
        rest of the state's structure (for inspection and tests)."""
        return read_params(self.directory / str(step))

    def _disk_error_or(self, error: Exception, step: int) -> Exception:
        disk = _as_disk_error(error, self.directory / str(step))
        return disk if disk is not None else error

    def close(self) -> None:
        try:
            self._finish_manifests()
        finally:
            self._manager.close()  # also after a failed save: joins Orbax's threads

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _savable(state: Any) -> Any:
    """On one CPU process the devices' memory is the host's: numpy views of the arrays skip
    Orbax's per-array device-transfer machinery (measured on a vit_sweep state of 239 arrays:
    ~160 instead of ~400 ms of CPU a save). Restores are the same either way; elsewhere (GPU, TPU,
    several processes) Orbax's own asynchronous transfer of jax.Arrays is the one to use."""
    if jax.process_count() == 1 and all(device.platform == "cpu" for device in jax.local_devices()):
        return jax.device_get(state)
    return state


def _non_finite(state: Any) -> str | None:
    """What is wrong with a state holding NaN/inf: a checkpoint saved between a divergence and
    its detection (the loop reads losses back only every few steps) would diverge again on every
    resume, so it is unusable like a corrupt one."""
    import jax.numpy as jnp

    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if jnp.issubdtype(getattr(leaf, "dtype", None) or jnp.int32, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
            return f"non-finite values in {jax.tree_util.keystr(path)} (saved after a divergence)"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


# --- parameters only (inspection, pretrained inits): Orbax partial restore of state.params -------

STATE_ITEM = "state"  # the item CheckpointStore saves the train state under


def saved_params_metadata(step_dir: Path) -> Any | None:
    """The saved parameter tree's Orbax metadata (shapes, dtypes; no array read), or None when
    the step holds no engine state."""
    with quiet_orbax():
        metadata = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).metadata(Path(step_dir).absolute() / STATE_ITEM)
    tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
    return tree["params"] if isinstance(tree, dict) and "params" in tree else None


def read_params(step_dir: Path) -> Any:
    """The parameters saved in a step directory, onto this process's first device whatever mesh
    saved them: the restore target comes from the checkpoint's own metadata."""
    saved = saved_params_metadata(step_dir)
    if saved is None:
        raise ValueError(f"{step_dir}: not a checkpoint of this engine (no params)")
    shapes = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), saved)
    return restore_params_into(Path(step_dir).absolute(), shapes)


def restore_params_into(step_dir: Path, params_shape: Any) -> Any:
    """`state.params` of a step restored into `params_shape` (ShapeDtypeStructs; their shardings
    where given, else this process's first device), nothing else read."""
    target = {"params": params_shape}
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    restore_args = jax.tree.map(
        lambda leaf: ocp.ArrayRestoreArgs(sharding=getattr(leaf, "sharding", None) or one_device), target
    )
    with quiet_orbax():
        restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
            Path(step_dir) / STATE_ITEM,
            args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True),
        )
    return restored["params"]


class quiet_orbax:
    """Orbax logs a warning for the per-item metadata file our saves do not write; reading
    parameters is not worth that line."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("absl")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc_info: object) -> None:
        self._logger.setLevel(self._level)
