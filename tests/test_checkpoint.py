"""Checkpoint round trip and the checksum manifest's fallback to an older step."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import abstract_like

from engine.training.checkpoint import MANIFEST, CheckpointStore, verify_manifest


def _state(seed: int) -> dict:
    params = {"dense": {"kernel": jax.random.normal(jax.random.key(seed), (8, 4))}, "bias": jnp.arange(4.0)}
    return {"params": params, "opt_state": optax.adamw(1e-3).init(params), "step": jnp.asarray(seed)}


def _assert_equal(a: dict, b: dict) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_exact_values_and_meta(tmp_path: Path) -> None:
    state = _state(1)
    with CheckpointStore(tmp_path / "ckpt", keep=3) as store:
        store.save(5, state, {"run_id": "abc", "step": 5})
    restored = CheckpointStore(tmp_path / "ckpt", keep=3).restore_latest(abstract_like(state))
    assert restored is not None and restored.step == 5
    assert restored.meta == {"run_id": "abc", "step": 5}
    _assert_equal(restored.state, state)


def test_keep_limits_the_number_of_steps(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt", keep=2) as store:
        for step in (1, 2, 3):
            store.save(step, _state(step), {"step": step})
        store.wait()
        assert store.steps() == [2, 3]


@pytest.mark.parametrize("damage", ["flip_byte", "drop_manifest", "truncate_metadata"])
def test_damaged_latest_step_falls_back_to_previous(tmp_path: Path, damage: str) -> None:
    with CheckpointStore(tmp_path / "ckpt", keep=3) as store:
        store.save(1, _state(1), {"step": 1})
        store.save(2, _state(2), {"step": 2})
    latest = tmp_path / "ckpt" / "2"
    if damage == "flip_byte":
        data_file = max((p for p in latest.rglob("*") if p.is_file() and p.name != MANIFEST),
                        key=lambda p: p.stat().st_size)
        raw = bytearray(data_file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data_file.write_bytes(bytes(raw))
    elif damage == "drop_manifest":
        (latest / MANIFEST).unlink()
    else:
        metadata = latest / "state" / "_METADATA"
        metadata.write_bytes(metadata.read_bytes()[:10])
    assert verify_manifest(latest) is not None
    restored = CheckpointStore(tmp_path / "ckpt", keep=3).restore_latest(abstract_like(_state(0)))
    assert restored is not None and restored.step == 1
    _assert_equal(restored.state, _state(1))


def test_no_checkpoint_restores_none(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "ckpt", keep=1).restore_latest(abstract_like(_state(0))) is None
