"""Reading a results table (CSV or JSONL) into canonical columns, with one clear error per problem.

Canonical columns (docs/outputs.md): sparsity, nonzeros (N), data (D), loss. Other names are
mapped with `columns={"loss": "val-loss", ...}`. Extra columns are kept as strings or numbers
(steps, init, pretrain_data, ...). Rows whose `init` column says `pretrained` are not used by the
law fit (the law is about from-scratch training); they feed the Table 4 analysis.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import SupportsFloat, SupportsIndex

import numpy as np

from engine.errors import UserError
from engine.results import CANONICAL_COLUMNS, parse_results


@dataclass(frozen=True)
class ResultsTable:
    """A validated results table. Arrays are float64, one entry per run."""

    sparsity: np.ndarray
    nonzeros: np.ndarray
    data: np.ndarray
    loss: np.ndarray
    extra: dict[str, list[object]] = field(default_factory=dict)
    source: str = "<memory>"
    sha256: str = ""

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def column(self, name: str) -> np.ndarray | list[object]:
        if name in CANONICAL_COLUMNS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise KeyError(name)

    def numeric_column(self, name: str) -> np.ndarray | None:
        """An extra column as floats, or None if absent or not all numeric."""
        values = self.extra.get(name)
        if values is None:
            return None
        try:
            return np.array([_as_float(v) for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            return None

    def select(self, keep: np.ndarray) -> ResultsTable:
        keep = np.asarray(keep, bool)
        return ResultsTable(
            sparsity=self.sparsity[keep], nonzeros=self.nonzeros[keep], data=self.data[keep],
            loss=self.loss[keep],
            extra={k: [v for v, flag in zip(vs, keep, strict=True) if flag] for k, vs in self.extra.items()},
            source=self.source, sha256=self.sha256,
        )

    def from_scratch_mask(self) -> np.ndarray:
        init = self.extra.get("init")
        if init is None:
            return np.ones(len(self), bool)
        return np.array([str(v).strip().lower() != "pretrained" for v in init], bool)


def parse_column_map(spec: str | None) -> dict[str, str]:
    """'loss=val-loss,data=tokens' -> {'loss': 'val-loss', 'data': 'tokens'}."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        canonical, sep, source = item.partition("=")
        canonical, source = canonical.strip(), source.strip()
        if not sep or not canonical or not source:
            raise UserError(f"--columns: expected CANONICAL=SOURCE pairs, got {item!r}", exit_code=2)
        if canonical not in CANONICAL_COLUMNS:
            raise UserError(
                f"--columns: {canonical!r} is not a canonical column (one of {', '.join(CANONICAL_COLUMNS)})",
                exit_code=2,
            )
        mapping[canonical] = source
    return mapping


def _read_rows(path: Path) -> list[dict[str, object]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read results table ({error.__class__.__name__}: {error})") from error
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows, problems = parse_results(path, text)  # the same reader as a sweep's results.jsonl
        if problems:  # a table given to `engine fit` is read strictly: the first problem stops it
            raise UserError(problems[0])
        return rows
    return _read_csv(path, text)


def _read_csv(path: Path, text: str) -> list[dict[str, object]]:
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, [])
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise UserError(f"{path}:1: duplicate column(s) {', '.join(map(repr, duplicated))}")
        # As csv.DictReader: a short row reads None for its missing cells, extra cells are dropped.
        return [{name: values[i] if i < len(values) else None for i, name in enumerate(header)}
                for values in reader if values]
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None


def read_table(path: Path, columns: dict[str, str] | None = None) -> ResultsTable:
    """Read and validate a results table; raises UserError naming the file, row and column."""
    columns = columns or {}
    rows = _read_rows(path)
    if not rows:
        raise UserError(f"{path}: no rows")
    header = list(rows[0].keys())
    source_of = {name: columns.get(name, name) for name in CANONICAL_COLUMNS}
    missing = [f"{name}" + (f" (mapped from {source_of[name]!r})" if name in columns else "")
               for name in CANONICAL_COLUMNS if source_of[name] not in header]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, header))} "
            "(map names with --columns loss=val-loss,...)"
        )
    values: dict[str, list[float]] = {name: [] for name in CANONICAL_COLUMNS}
    first_data_line = 2  # CSV: line 1 is the header
    for index, row in enumerate(rows):
        where = f"{path}:{index + first_data_line if path.suffix.lower() == '.csv' else index + 1}"
        for name in CANONICAL_COLUMNS:
            raw = row.get(source_of[name])
            try:
                value = float(raw)  # type: ignore[arg-type]
            except OverflowError:  # a JSON integer such as 10**400: beyond any float
                raise UserError(f"{where}: column {source_of[name]!r} is not finite: {str(raw)[:40]}...") from None
            except (TypeError, ValueError):
                raise UserError(f"{where}: column {source_of[name]!r} is not a number: {raw!r}") from None
            if not math.isfinite(value):
                raise UserError(f"{where}: column {source_of[name]!r} is not finite: {raw!r}")
            values[name].append(value)
        sparsity = values["sparsity"][-1]
        if not 0.0 <= sparsity < 1.0:
            raise UserError(f"{where}: sparsity must be in [0, 1), got {sparsity!r}")
        for name in ("nonzeros", "data", "loss"):
            if values[name][-1] <= 0.0:
                raise UserError(f"{where}: {name} ({source_of[name]!r}) must be positive, got {values[name][-1]!r}")
    used = set(source_of.values())
    extra = {key: [row.get(key) for row in rows] for key in header if key not in used and key}
    return ResultsTable(
        sparsity=np.array(values["sparsity"]), nonzeros=np.array(values["nonzeros"]),
        data=np.array(values["data"]), loss=np.array(values["loss"]), extra=extra,
        source=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _as_float(value: object) -> float:
    """float(value) for what float() accepts; anything else raises TypeError, as float() would."""
    if isinstance(value, (str, bytes, bytearray, SupportsFloat, SupportsIndex)):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def table_from_arrays(
    sparsity: np.ndarray, nonzeros: np.ndarray, data: np.ndarray, loss: np.ndarray,
    extra: dict[str, list[object]] | None = None, source: str = "<memory>",
) -> ResultsTable:
    """A ResultsTable from arrays (for the training loop's in-memory results), hashed by content."""
    arrays = [np.asarray(a, np.float64) for a in (sparsity, nonzeros, data, loss)]
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
    return ResultsTable(sparsity=arrays[0], nonzeros=arrays[1], data=arrays[2], loss=arrays[3],
                        extra=extra or {}, source=source, sha256=digest)
