"""The sweep's progress display keeps its count, elapsed time and ETA on an 80-column terminal."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from rich.console import Console

from engine.study.sweep import _progress


@pytest.mark.parametrize("width", [80, 100, 200])
def test_count_and_eta_survive_a_narrow_terminal(width: int) -> None:
    out = StringIO()
    console = Console(width=width, file=out, force_terminal=True, color_system=None)
    progress = _progress(console)
    sweep = progress.add_task("sweep", total=36, info="last 1a2b3c4d5e6f: loss 1.2345")
    run = progress.add_task("run 12/36 1a2b3c4d5e6f d=128 S=0.875 steps=1200", total=1200,
                            info="loss 1.2345 123 step/s")
    progress.update(sweep, completed=11)
    progress.update(run, completed=500)
    console.print(progress.make_tasks_table(progress.tasks))
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 2 and all(len(line) <= width for line in lines), lines
    for line, count in zip(lines, ("11/36", "500/1200"), strict=True):
        assert count in line and re.search(r"\d:\d\d:\d\d eta (-:--:--|\d:\d\d:\d\d)$", line.rstrip()), line
    assert lines[1].startswith("run 12/36")
