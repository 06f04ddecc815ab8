"""JAX's persistent compilation cache for training runs.

Runs of a sweep that share shapes reuse each other's compiled programs within a process
(engine/training/loop.py); the persistent cache also gives a later `engine run` (or a remote worker) the
compiled code of every shape met before, so it only traces. Used only if the user has not
configured a cache directory; off with ENGINE_NO_COMPILE_CACHE=1. Location:
$XDG_CACHE_HOME/sparse-scaling-engine/jax (default ~/.cache/...).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_persistent_compile_cache() -> Path | None:
    if os.environ.get("ENGINE_NO_COMPILE_CACHE") == "1":
        return None
    if jax.process_count() > 1:
        # Seen on a 2-process CPU cluster: one process loaded a cached program the other compiled
        # afresh, and their collectives no longer matched (gloo aborted). Compile in every process.
        return None
    configured = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # config options are dynamic
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = base / "sparse-scaling-engine" / "jax"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: just compile every time
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Tiny train steps compile in under JAX's default 1 s threshold; cache them anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
