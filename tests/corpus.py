"""A small real-text corpus from files that ship with Python itself, for tests and smoke runs.

No download and no checked-in data: the standard library's own .py files are real English and code
text, present on every machine that runs the engine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Stable, long-lived stdlib modules; whichever exist are used.
STDLIB_TEXT_FILES = (
    "argparse.py",
    "textwrap.py",
    "difflib.py",
    "fractions.py",
    "heapq.py",
    "bisect.py",
    "shlex.py",
    "string.py",
    "calendar.py",
    "colorsys.py",
)


def stdlib_dir() -> Path:
    """The directory of the standard library of the running interpreter."""
    return Path(os.__file__).resolve().parent


def stdlib_text_files() -> list[Path]:
    """The corpus files present in this interpreter's standard library, in a fixed order."""
    files = [stdlib_dir() / name for name in STDLIB_TEXT_FILES]
    return [file for file in files if file.is_file()]


def copy_stdlib_corpus(destination: Path) -> list[Path]:
    """Copy the corpus into `destination` (as .txt files) and return the copies."""
    destination.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in stdlib_text_files():
        target = destination / f"{source.stem}.txt"
        shutil.copyfile(source, target)
        copies.append(target)
    return copies
