"""The batched solver, traced once per machine: a `jax.export` of it kept on disk.

JAX's persistent compilation cache keeps compiled code, but every new process still traces and
lowers the solver (vmap of a scan of damped Newton steps with exact Hessians) before it can look
the code up: about 0.8 s of a 1.0-1.2 s cold `engine fit`, against about 0.8 s for the whole
reference procedure (BENCHMARKS.md). An exported solver is the lowered program itself:
deserialising it takes a millisecond, and its compiled code comes from the persistent cache.

Files live beside the persistent compilation cache, named by a digest of everything the program
depends on: the fit modules' source, JAX's version, the backend, the argument shapes and the static
settings. A stale or unreadable file is ignored and written again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from jax import export

from engine.fit import law, multistart, newton, objective
from engine.fit.objective import FitData

log = logging.getLogger(__name__)
export.register_namedtuple_serialization(FitData, serialized_name="engine.fit.objective.FitData")
_PROGRAM_SOURCES = (law, multistart, newton, objective)  # what the solver's program is made of


def exported_call(
    function: Callable[..., Any], args: tuple[Any, ...], statics: dict[str, Any], directory: Path
) -> tuple[Any, ...]:
    """function(*args, **statics) through its export in `directory` (made there when missing)."""
    path = directory / f"solver-{_digest(args, statics)}.jax-export"
    program = _loaded.get(path) or _read(path)
    if program is None:
        program = export.export(jax.jit(lambda *a: function(*a, **statics)))(*args)
        _write(path, program.serialize())
    _loaded[path] = program  # one object per program: JAX caches its compiled call by identity
    return program.call(*args)


_loaded: dict[Path, export.Exported] = {}


@functools.cache
def _sources_digest() -> bytes:
    hasher = hashlib.sha256()
    for module in _PROGRAM_SOURCES:
        hasher.update(Path(module.__file__).read_bytes())
    return hasher.digest()


def _digest(args: tuple[Any, ...], statics: dict[str, Any]) -> str:
    hasher = hashlib.sha256(_sources_digest())
    shapes = [(a.shape, str(a.dtype)) for a in jax.tree.leaves(args)]
    hasher.update(repr((jax.__version__, jax.default_backend(), shapes, sorted(statics.items()),
                        str(jax.tree.structure(args)))).encode())
    return hasher.hexdigest()[:32]


def _read(path: Path) -> export.Exported | None:
    try:
        return export.deserialize(bytearray(path.read_bytes()))
    except FileNotFoundError:
        return None
    except Exception as error:  # a torn or foreign file: export again
        log.warning("ignoring unreadable exported solver %s: %s", path, error)
        return None


def _write(path: Path, data: bytes | bytearray) -> None:
    """Atomically; a cache that cannot be written is only slower."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(bytes(data))
        temporary.replace(path)
    except OSError as error:
        log.warning("cannot cache the exported solver at %s: %s", path, error)
        temporary.unlink(missing_ok=True)
