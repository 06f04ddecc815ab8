"""Where a sweep's results live on disk (docs/outputs.md), written so a kill never tears them.

runs/<spec name>/results.jsonl   one JSON line per finished run: appended, flushed and fsynced
runs/<spec name>/results.csv     rebuilt from results.jsonl after every append (atomic replace)
runs/<spec name>/<run id>/status.json   running | done | failed, the step and the reason

Appends from several `engine run` processes (one machine or a shared filesystem) are serialised
by a POSIX lock on `.results.lock` (fcntl.lockf: released by the kernel when a holder dies, so a
killed process never leaves it held). Under the lock: the once-per-run_id check, the repair of a
torn last line (a writer killed mid-append; nothing else can leave one, as every writer holds the
lock), one write() of the whole line through O_APPEND, fsync, and the CSV rebuild. A garbled line
elsewhere (hand edits, a disk error) is reported with its file:line, skipped, and left in place.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from engine import faults

# The law's inputs first (what `engine fit` reads), then what the engine adds (docs/outputs.md).
CANONICAL_COLUMNS = ("sparsity", "nonzeros", "data", "loss")
ENGINE_COLUMNS = (
    "run_id", "family", "pattern", "dense_params", "d_model", "steps", "batch_size",
    "flops_dense", "flops_sparse", "init", "wall_s", "source_run_id", "pretrain_data",
)
RESULT_COLUMNS = CANONICAL_COLUMNS + ENGINE_COLUMNS

RunState = Literal["running", "done", "failed"]
STATUS_FILE = "status.json"  # read back by engine.planning.plan.read_status
RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".results.lock"

_reported: set[str] = set()  # garbled lines already reported by this process


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (shown above a live rich progress display too)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def process_umask() -> int:
    """The process umask. os.umask can only be read by setting it, so it is set back at once;
    /proc/self/status (Linux) reports it without that brief change, which threads could see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers see the old or the new file, never half.
    The temporary name is unique: two processes writing the same file never share it. mkstemp
    creates it 0600; it gets the mode any other new file would (0666 less the umask), so
    collaborators on a shared filesystem can read what the engine writes."""
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~process_umask())
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        faults.reached("file-replace")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a power loss after the rename keeps the new file)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_status(
    run_dir: Path, state: RunState, step: int, reason: str | None = None, **extra: Any
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {"state": state, "step": step, "reason": reason, **extra}
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(status, indent=1) + "\n")


def parse_results(path: Path, text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON-object lines of a results.jsonl text, and one `file:line: problem` per bad line.
    The one parser of results lines: a sweep skips bad lines (sweep_rows), `engine fit` refuses them."""
    rows, problems = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        unterminated = number == len(lines)  # text after the last newline: an append was cut
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            what = "incomplete last line (an append cut short)" if unterminated else "not valid JSON"
            detail = "nested too deeply" if isinstance(error, RecursionError) else getattr(error, "msg", error)
            problems.append(f"{path}:{number}: {what} ({detail}): {line[:60]!r}")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}:{number}: not a JSON object: {line[:60]!r}")
            continue
        rows.append(row)
    return rows, problems


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every well-formed row of a sweep's results.jsonl. A torn or garbled line is skipped and
    reported once per process on stderr with its file:line (the file itself is not changed)."""
    path = sweep_dir / RESULTS_FILE
    if not path.is_file():
        return []
    rows, problems = parse_results(path, path.read_text(encoding="utf-8", errors="replace"))
    for problem in problems:
        if problem not in _reported:
            _reported.add(problem)
            warn(f"{problem}; skipped")
    return rows


@contextmanager
def results_lock(sweep_dir: Path) -> Iterator[None]:
    """Exclusive lock over the sweep's results files, across processes and hosts (POSIX locks
    work over NFS); the kernel drops it if the holder dies."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK_FILE, "a+b") as lock:
        fcntl.lockf(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(lock.fileno(), fcntl.LOCK_UN)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a writer killed mid-append, as only lock holders
    append). Its run has no `done` status, so it is trained or resumed again and re-appended."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    line = data.count(b"\n") + 1
    warn(f"{path}:{line}: removed an incomplete last line (an append cut short): {data[keep:keep + 60]!r}")
    with open(path, "r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())


def _write_line(path: Path, line: bytes) -> None:
    """One O_APPEND write() of the whole line, then fsync: concurrent readers and appenders see
    whole lines. (A fault-injection test may tear it here: see engine/faults.py.)"""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if faults.armed("results-write"):
            os.write(descriptor, line[: len(line) // 2])
            os.fsync(descriptor)
            faults.reached("results-write")
            os.write(descriptor, line[len(line) // 2:])
        else:
            os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def append_result(sweep_dir: Path, row: dict[str, Any]) -> bool:
    """Record one finished run; False when its run_id is already recorded (the first result of
    a run is final: a run is never trained twice, and a result is never rewritten)."""
    with results_lock(sweep_dir):
        path = sweep_dir / RESULTS_FILE
        if path.is_file():
            _drop_torn_tail(path)
        if any(existing.get("run_id") == row["run_id"] for existing in sweep_rows(sweep_dir)):
            return False
        _write_line(path, (json.dumps(row) + "\n").encode("utf-8"))
        write_results_csv(sweep_dir)
    return True


def write_results_csv(sweep_dir: Path) -> None:
    rows = sweep_rows(sweep_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "results.csv", buffer.getvalue())
