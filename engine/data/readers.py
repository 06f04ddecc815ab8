"""Raw files -> documents' text, streamed in bounded blocks (the prepared cache's input side).

    for block, document_ends in read_blocks(path, "jsonl", text_field="text"):
        ...  # tokenize block; an EOS follows when document_ends

Formats: `text` (a whole file is one document, read in blocks of whole lines), `jsonl` (one JSON
object per line, its `text_field` a document; .gz, .bz2 and .xz are decompressed on the fly),
`parquet` (the string column `text_field`, read one record batch at a time), `array_record` (each
record one UTF-8 document). No reader holds more than one block, record batch or line at a time.
Every problem is a UserError naming the file (and line or row).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal

from engine.errors import UserError

TextFormat = Literal["text", "jsonl", "parquet", "array_record"]
TEXT_FORMATS: tuple[TextFormat, ...] = ("text", "jsonl", "parquet", "array_record")
BLOCK_BYTES = 1 << 22  # 4 MiB of text per tokenizer call: large enough to be fast, small to be bounded
PARQUET_BATCH_ROWS = 1024

_OPENERS: dict[str, Callable[..., IO[bytes]]] = {  # compressed text by suffix; the rest opens plainly
    ".gz": gzip.open,  # type: ignore[dict-item]  # typeshed overloads by mode; "rb" gives bytes
    ".bz2": bz2.open,  # type: ignore[dict-item]
    ".xz": lzma.open,  # type: ignore[dict-item]
}


def read_blocks(path: Path, fmt: TextFormat, text_field: str = "text") -> Iterator[tuple[bytes, bool]]:
    """(UTF-8 text, whether a document ends after it) in file order."""
    if fmt == "text":
        return _text_blocks(path)
    if fmt == "jsonl":
        return _jsonl_documents(path, text_field)
    if fmt == "parquet":
        return _parquet_documents(path, text_field)
    if fmt == "array_record":
        return _array_record_documents(path)
    raise UserError(f"unknown text format {fmt!r}; expected one of {list(TEXT_FORMATS)}")


def _open(path: Path) -> IO[bytes]:
    try:
        return _OPENERS.get(path.suffix, open)(path, "rb")
    except OSError as error:
        raise UserError(f"cannot read data file {path}: {error}") from error


def _text_blocks(path: Path) -> Iterator[tuple[bytes, bool]]:
    """Blocks of whole lines (a UTF-8 character never straddles two blocks); the file is one
    document, so only the last block ends it."""
    carry = b""
    with _open(path) as handle:
        while True:
            try:
                chunk = handle.read(BLOCK_BYTES)
            except (OSError, EOFError) as error:
                raise UserError(f"cannot read data file {path}: {error}") from error
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) < 4 * BLOCK_BYTES:  # one very long line: keep reading
                carry = data
                continue
            cut = cut or len(data)
            carry = data[cut:]
            yield data[:cut], False
    yield carry, True


def _jsonl_documents(path: Path, text_field: str) -> Iterator[tuple[bytes, bool]]:
    with _open(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{number}: not a JSON object: {error.msg}") from error
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise UserError(f"{path}:{number}: no string field {text_field!r} in this JSON line")
                yield text.encode("utf-8"), True
        except (OSError, EOFError) as error:
            raise UserError(f"cannot read data file {path}: {error}") from error


def _parquet_documents(path: Path, column: str) -> Iterator[tuple[bytes, bool]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pyarrow.ArrowException) as error:
        raise UserError(f"cannot read {path} as Parquet: {error}") from error
    names = parquet.schema_arrow.names
    if column not in names:
        raise UserError(f"{path} has no column {column!r}; it has {names}")
    row = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str):
                raise UserError(f"{path}: row {row} of column {column!r} is {type(text).__name__}, not text")
            row += 1
            yield text.encode("utf-8"), True


def _array_record_documents(path: Path) -> Iterator[tuple[bytes, bool]]:
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
    except (OSError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot read {path} as ArrayRecord: {error}") from error
    try:
        for start in range(0, reader.num_records(), PARQUET_BATCH_ROWS):
            stop = min(start + PARQUET_BATCH_ROWS, reader.num_records())
            for record in reader.read(start, stop):
                yield record, True
    finally:
        reader.close()
