"""A progress bar over raw bytes for data preparation, on stderr.

Inside another live display (a sweep's progress in `engine run`) rich allows no second one: the
preparation then runs without its own bar rather than failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn


@contextmanager
def byte_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yields `advance(bytes)`; the bar disappears when the block ends."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    try:
        progress.start()
    except LiveError:
        yield lambda advance: None
        return
    task = progress.add_task(label, total=total)
    try:
        yield lambda advance: progress.advance(task, advance)
    finally:
        progress.stop()
