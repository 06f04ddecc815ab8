"""Test-only fault injection: kill, fill the disk, or poison a loss at a named point of the engine.

The reliability tests (tests/test_kill*.py, tests/test_reliability_*.py) need a real `engine run`
to die *inside* a checkpoint save or a results append, which a random SIGKILL hits only rarely.
So the few places that write durable state call `reached(point)`, and an environment variable
set by a test turns that call into a fault. Unset (always, outside tests) every hook is one
dictionary lookup and changes nothing. Training itself (engine/training/loop.py) has no hooks: a NaN is
injected by wrapping the run's loss function from engine/study/sweep.py.

    ENGINE_TEST_KILL_AT=POINT[:N]     SIGKILL this process the N-th time (default 1st) POINT is reached
    ENGINE_TEST_ENOSPC_AT=POINT[:N]   raise OSError(ENOSPC) there instead (a full disk)
    ENGINE_TEST_NAN_AT=STEP[@RUN_ID]  the training loss of step STEP (1-based, of RUN_ID or of every
                                      run) is NaN: the run diverges there

Points: `results-write` (half of the results.jsonl line is written and fsynced, then the fault),
`checkpoint-save` (an asynchronous Orbax save has started), `checkpoint-manifest` (the checksum
manifest's temporary file is written, not yet renamed), `file-replace` (any atomic small-file
write: the temporary file is written, not yet renamed).
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

KILL_VARIABLE = "ENGINE_TEST_KILL_AT"
ENOSPC_VARIABLE = "ENGINE_TEST_ENOSPC_AT"
NAN_VARIABLE = "ENGINE_TEST_NAN_AT"
POINTS = ("results-write", "checkpoint-save", "checkpoint-manifest", "file-replace")

_arrivals: Counter[str] = Counter()
_counting_for: list[object] = [None]  # the settings the counts belong to (in-process tests change them)


def _target(variable: str) -> tuple[str, int] | None:
    """(point, n) from `POINT[:N]` in the environment variable, or None when unset."""
    raw = os.environ.get(variable)
    if not raw:
        return None
    point, _, count = raw.partition(":")
    if point not in POINTS:
        raise ValueError(f"{variable}={raw}: unknown point {point!r} (points: {', '.join(POINTS)})")
    return point, int(count or 1)


def armed(point: str) -> bool:
    """Whether a fault is set for `point` at all (to take a slower, tearable write path)."""
    return any((target := _target(v)) is not None and target[0] == point for v in (KILL_VARIABLE, ENOSPC_VARIABLE))


def reached(point: str) -> None:
    """Called at `point`; injects the configured fault on its N-th arrival, else does nothing."""
    kill, enospc = _target(KILL_VARIABLE), _target(ENOSPC_VARIABLE)
    if kill is None and enospc is None:
        return
    if _counting_for[0] != (kill, enospc):
        _counting_for[0] = (kill, enospc)
        _arrivals.clear()
    _arrivals[point] += 1
    if kill == (point, _arrivals[point]):
        os.kill(os.getpid(), signal.SIGKILL)
    if enospc == (point, _arrivals[point]):
        raise OSError(errno.ENOSPC, f"No space left on device (injected by {ENOSPC_VARIABLE})")


def nan_step(run_id: str) -> int | None:
    """The step whose loss ENGINE_TEST_NAN_AT poisons for this run, or None."""
    raw = os.environ.get(NAN_VARIABLE)
    if not raw:
        return None
    step, _, only = raw.partition("@")
    return int(step) if not only or only == run_id else None
