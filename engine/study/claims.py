"""Claims: which process trains a run, so two `engine run` processes never train the same one.

    claim(run_dir)                 # Claim, or None when a live process holds the run
    ...train...
    release(claim)

A claim is `<run>/claim.json`, created with O_CREAT|O_EXCL (atomic on local filesystems and on
NFSv3+), holding host, pid, start time and a random token. While it is held, a daemon thread
refreshes the file's mtime (the heartbeat) every `stale_after / 4` seconds. A claim is stale, and
taken over, when its process is gone: at once on the same host (the pid is not alive), after
`stale_after` seconds without a heartbeat from another host (default 600 s, or the environment
variable ENGINE_CLAIM_STALE_SECONDS). Taking over renames the stale file to a unique name first
(one of several contenders wins the rename), then creates a fresh claim the same O_EXCL way.

The heartbeat thread also checks that the file still holds its token: a claim taken over by
another host (this process was paused longer than `stale_after`) sets `Claim.lost`, and the
sweep then records nothing for that run. The sweep appends one line to `<run>/attempts.jsonl`
(`record_attempt`: host, pid, time, the step the status says) each time a holder starts or
resumes training, the record of how often a run was (re)started.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLAIM_FILE = "claim.json"
ATTEMPTS_FILE = "attempts.jsonl"
STALE_VARIABLE = "ENGINE_CLAIM_STALE_SECONDS"
DEFAULT_STALE_AFTER = 600.0


@dataclass
class Claim:
    """A held claim on one run directory. `lost` turns True if another process took it over."""

    run_dir: Path
    token: str
    holder: dict[str, Any]
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.run_dir / CLAIM_FILE


def stale_after_default() -> float:
    raw = os.environ.get(STALE_VARIABLE)
    return float(raw) if raw else DEFAULT_STALE_AFTER


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    """The claim's content; None when the file is gone. A half-written claim (its creator was
    killed between create and write) reads as {} and goes stale by its age."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def staleness(path: Path, holder: dict[str, Any], stale_after: float) -> str | None:
    """Why the claim at `path` is stale, or None when its holder may be alive."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "released"
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return f"process {pid} on this host is gone"
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (limit {stale_after:g} s)"
    return None


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"{holder.get('host', '?')}:{holder.get('pid', '?')} (since {started})"


def _create(path: Path, holder: dict[str, Any]) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(holder))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _take_over(path: Path, judged: dict[str, Any]) -> bool:
    """Move the stale claim `judged` out of the way; False if someone else got there first."""
    moved = path.with_name(f"{CLAIM_FILE}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return True  # already moved or released: try to create ours
    if _read_holder(moved) != judged:
        # A contender replaced the stale claim with a fresh one between our read and our rename:
        # put it back (link fails if yet another claim exists, which then stands).
        try:
            os.link(moved, path)
        except FileExistsError:
            pass
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return True


def claim(run_dir: Path, stale_after: float | None = None) -> Claim | None:
    """Claim `run_dir` for this process, taking over a stale claim; None when a live process
    holds it (`current_holder(run_dir)` says who)."""
    stale_after = stale_after_default() if stale_after is None else stale_after
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    token = secrets.token_hex(8)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "token": token}
    for _ in range(3):  # a contender may win each race; three rounds settle it
        if _create(path, holder):
            claim = Claim(run_dir, token, holder)
            _start_heartbeat(claim, stale_after)
            return claim
        existing = _read_holder(path)
        if existing is None:
            continue  # released between our create and our read
        reason = staleness(path, existing, stale_after)
        if reason is None:
            return None
        from engine.results import warn

        warn(f"{run_dir}: taking over the claim of {describe(existing)}: {reason}")
        _take_over(path, existing)
    return None


def current_holder(run_dir: Path) -> dict[str, Any] | None:
    return _read_holder(run_dir / CLAIM_FILE)


def record_attempt(held: Claim, step: int | None) -> None:
    """One line in <run>/attempts.jsonl: the holder starts (step None or 0) or resumes training."""
    record = {key: held.holder[key] for key in ("host", "pid", "started")} | {"step": step}
    descriptor = os.open(held.run_dir / ATTEMPTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(descriptor, (json.dumps(record) + "\n").encode())
    finally:
        os.close(descriptor)


def _start_heartbeat(claim: Claim, stale_after: float) -> None:
    interval = max(stale_after / 4, 0.05)

    def beat() -> None:
        while not claim._stop.wait(interval):
            if not _still_ours(claim):
                claim.lost = True
                return
            try:
                os.utime(claim.path)
            except FileNotFoundError:
                claim.lost = True
                return

    claim._thread = threading.Thread(target=beat, name=f"claim-heartbeat-{claim.run_dir.name}", daemon=True)
    claim._thread.start()


def _still_ours(claim: Claim) -> bool:
    holder = _read_holder(claim.path)
    return holder is not None and holder.get("token") == claim.token


def release(claim: Claim) -> None:
    """Stop the heartbeat and remove the claim file if it is still ours."""
    claim._stop.set()
    if claim._thread is not None:
        claim._thread.join()
    if not claim.lost and _still_ours(claim):
        claim.path.unlink(missing_ok=True)
