"""Progress of data preparation over raw bytes, on stderr.

`engine data prepare` draws a bar. Inside `engine run` the sweep's own live display owns the
terminal (a second one from another console would garble it), so preparation says what it does
in one line, which rich shows above that display.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn


@contextmanager
def byte_progress(total: int, label: str, bar: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(bytes)`; a bar (gone when the block ends) or one line saying what starts."""
    if not bar:
        print(f"{label} ({total / 2**20:.0f} MiB) into the data cache", file=sys.stderr, flush=True)
        yield lambda advance: None
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = progress.add_task(label, total=total)
    with progress:
        yield lambda advance: progress.advance(task, advance)
