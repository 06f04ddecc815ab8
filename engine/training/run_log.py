"""Where a run's scalars go: <run>/metrics.jsonl always, TensorBoard event files by default, W&B
when the spec asks for it.

The loop hands every sink the same record at the same points (every `log_every` steps and at each
evaluation), so the three never disagree. An event costs ~0.06 ms of host work per record (a
metrics.jsonl line ~0.03 ms); files are flushed at checkpoints and at the end, never per step.

Resuming: a run resumes from its checkpoint at step k, and whatever the interrupted attempt logged
past k is dropped (metrics.jsonl lines, TensorBoard events) before the new attempt writes, so every
step appears once. W&B keeps its own history: a resumed W&B run skips the steps it already has.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from engine.errors import UserError

# metrics.jsonl key -> the tag TensorBoard and W&B show it under.
TAGS: dict[str, str] = {
    "train_loss": "train/loss",
    "eval_loss": "eval/loss",
    "learning_rate": "train/learning_rate",
    "sparsity": "train/sparsity",
    "steps_per_s": "train/steps_per_s",
}
TENSORBOARD_DIR = "tensorboard"
_file_numbers = itertools.count()  # two attempts of a run in one process and one second differ
WANDB_INSTALL = "pip install 'sparse-scaling-engine[wandb]'"


@dataclass(frozen=True)
class WandbTarget:
    """The W&B run one engine run logs to (built from the spec's `run.wandb`)."""

    project: str
    entity: str | None
    mode: Literal["online", "offline"]
    run_id: str  # the W&B run's id and name: an interrupted run resumes the same W&B run
    group: str  # the experiment's name: a sweep's runs side by side
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class RunLogging:
    """Which sinks a run writes besides metrics.jsonl."""

    tensorboard: bool = True
    wandb: WandbTarget | None = None


def require_wandb() -> None:
    """Fail before any training when the spec asks for W&B and it is not installed."""
    if importlib.util.find_spec("wandb") is None:
        raise UserError(f"run.wandb is set but wandb is not installed: {WANDB_INSTALL}")


class MetricsLog:
    """<run>/metrics.jsonl. On resume, lines past the restored step are dropped (they belong to
    the interrupted attempt and will be written again)."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if _line_step(line) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        pass  # every write is closed at once

    def close(self, failed: bool) -> None:
        pass


def _line_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn or foreign line is dropped


# --- TensorBoard ---------------------------------------------------------------------------------
# The event file format (TFRecord framing of `Event` protos) written with the `tensorboard`
# package's TensorFlow-free pieces: its protos, its record framing and its CRC. Its EventFileWriter
# is not used: it opens files through `tensorboard.compat.tf`, which imports TensorFlow whenever
# TensorFlow is installed next to JAX (seconds of import, and a second framework in the process).


def _protos() -> tuple[Any, Any]:
    """(event_pb2, summary_pb2), imported only by runs that write events."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2, summary_pb2


def _masked_crc(data: bytes) -> int:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    return masked_crc32c(data)


def _frame(data: bytes) -> bytes:
    """One TFRecord: length, its CRC, the data, its CRC (little-endian, masked CRC-32C)."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


def read_records(path: Path) -> Iterator[bytes]:
    """The records of an event file, up to the first torn or corrupt one (a killed writer's tail)."""
    with open(path, "rb") as handle:
        while True:
            header = handle.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
                return
            data = handle.read(length)
            footer = handle.read(4)
            if len(data) < length or len(footer) < 4 or struct.unpack("<I", footer)[0] != _masked_crc(data):
                return
            yield data


def trim_events(directory: Path, resume_step: int) -> None:
    """Drop the events past `resume_step` from every event file in `directory` (an interrupted
    attempt's, logged again by the resumed one). Without this TensorBoard would show two points
    per step for steps/s, whose values differ between attempts (the losses would coincide: resumes
    are bit-identical), and which of them it draws depends on its loader."""
    event_pb2, _ = _protos()
    for path in sorted(directory.glob("events.out.tfevents.*")):
        records = list(read_records(path))
        kept = [data for data in records if event_pb2.Event.FromString(data).step <= resume_step]
        whole = path.stat().st_size == sum(len(data) + 16 for data in records)  # no torn tail
        if whole and len(kept) == len(records):
            continue
        partial = path.with_name(f".trim-{path.name}")  # not matched by the glob above
        partial.write_bytes(b"".join(_frame(data) for data in kept))
        os.replace(partial, path)


class TensorBoardLog:
    """<run>/tensorboard/: one event file per attempt of the run, one event per record."""

    def __init__(self, directory: Path, resume_step: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        trim_events(directory, resume_step)
        self._event_pb2, self._summary_pb2 = _protos()
        # TensorBoard's own naming: its loaders read a directory's files in name (= time) order.
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_file_numbers)}")
        self.path = directory / name
        self._file: BinaryIO = open(self.path, "xb")
        self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def _write(self, event: Any) -> None:
        self._file.write(_frame(event.SerializeToString()))

    def write(self, record: dict[str, Any]) -> None:
        summary = self._summary_pb2.Summary(value=[
            self._summary_pb2.Summary.Value(tag=TAGS[key], simple_value=float(value))
            for key, value in record.items() if key in TAGS
        ])
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(record["step"]), summary=summary))

    def flush(self) -> None:
        self._file.flush()

    def close(self, failed: bool) -> None:
        self._file.close()


# --- W&B -----------------------------------------------------------------------------------------


class WandbLog:
    """One W&B run per engine run: id and name the run id, resumed when the run resumes."""

    def __init__(self, target: WandbTarget, run_dir: Path) -> None:
        require_wandb()
        import wandb

        try:
            self.run = wandb.init(
                project=target.project, entity=target.entity, mode=target.mode,
                id=target.run_id, name=target.run_id, group=target.group, config=target.config,
                resume="allow", dir=run_dir,  # offline runs land in <run>/wandb/
                # The sweep's progress display owns the terminal: no console capture, no banners.
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as error:  # noqa: BLE001 - wandb raises many types (login, network, usage)
            raise UserError(f"run {target.run_id}: W&B could not start ({error})") from None
        # A resumed online run already holds steps below this one; W&B drops lower steps anyway,
        # with a warning per record.
        self.first_step = int(self.run.step)

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        if step >= self.first_step:
            self.run.log({TAGS[key]: value for key, value in record.items() if key in TAGS}, step=step)

    def flush(self) -> None:
        pass  # W&B's service process writes and uploads on its own

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


# --- all sinks -----------------------------------------------------------------------------------


class RunLogs:
    """The run's sinks behind one interface: write a record, flush, close."""

    def __init__(self, run_dir: Path, resume_step: int, logging: RunLogging) -> None:
        self.sinks: list[MetricsLog | TensorBoardLog | WandbLog] = [
            MetricsLog(run_dir / "metrics.jsonl", resume_step)
        ]
        try:
            if logging.tensorboard:
                self.sinks.append(TensorBoardLog(run_dir / TENSORBOARD_DIR, resume_step))
            if logging.wandb is not None:
                self.sinks.append(WandbLog(logging.wandb, run_dir))
        except BaseException:
            self.close(failed=True)
            raise

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self, failed: bool) -> None:
        for sink in self.sinks:
            sink.close(failed)
