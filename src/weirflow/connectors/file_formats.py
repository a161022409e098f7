"""How the file sink turns records into bytes: JSON lines or CSV rows.

Both encoders work on a batch of records and return the bytes to append to
one part file; the part file's path is only used to name it in errors.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from weirflow.connectors.part_files import FileSinkError

FileFormat = Literal["jsonl", "csv"]
Encode = Callable[[Any], Any]
_json = msgspec.json.Encoder()


def jsonl_bytes(values: list[Any], encode: Encode | None, path: str) -> bytes:
    """Encode records as JSON lines, one per record, each ending in a newline.

    Args:
        values: the records.
        encode: turns a record into ``bytes`` or ``str`` of one line; ``None``
            encodes the record itself as JSON (msgspec).
        path: the part file written to, for error messages.

    Returns:
        The UTF-8 bytes of every line.

    Raises:
        FileSinkError: an encoded record holds a newline.
    """
    encoder = encode or _json.encode
    lines = []
    for v in values:
        line = encoder(v)
        if type(line) is str:
            line = line.encode()
        if b"\n" in line:
            raise FileSinkError(
                f"part file {path}: the encoded record {line[:80]!r} holds a newline; "
                "a jsonl line must not"
            )
        lines.append(line)
    lines.append(b"")
    return b"\n".join(lines)


def csv_columns(
    columns: list[str] | None, encode: Encode | None, first: Any, path: str
) -> list[str]:
    """The header of a new CSV part file.

    Args:
        columns: the sink's declared columns, if any (returned as they are).
        encode: turns a record into a row (a mapping or a sequence), or ``None``.
        first: the first record of the part file, whose keys name the columns
            when none are declared.
        path: the part file, for error messages.

    Returns:
        The column names, in order.

    Raises:
        FileSinkError: no columns are declared and the first row is not a mapping.
    """
    if columns is not None:
        return columns
    row = encode(first) if encode else first
    if not isinstance(row, Mapping):
        raise FileSinkError(
            f"part file {path}: csv rows must be mappings when FileSink has no columns=, "
            f"got {type(row).__name__}"
        )
    return [str(k) for k in row]


def csv_bytes(values: list[Any], columns: list[str], encode: Encode | None, path: str) -> bytes:
    """Encode records as CSV rows under ``columns``.

    Args:
        values: the records; each becomes a mapping (missing columns are
            empty) or a sequence of exactly ``len(columns)`` values.
        columns: the part file's header.
        encode: turns a record into a row, or ``None`` to use the record itself.
        path: the part file, for error messages.

    Returns:
        The UTF-8 bytes of the rows, each ending in a newline.

    Raises:
        FileSinkError: a mapping row has fields outside the header, or a
            sequence row has the wrong number of values.
    """
    rows = []
    for v in values:
        row = encode(v) if encode else v
        if isinstance(row, Mapping):
            extra = set(row) - set(columns)
            if extra:
                raise FileSinkError(
                    f"part file {path}: row has fields {sorted(map(str, extra))} "
                    f"outside the header {columns}"
                )
            rows.append([row.get(c, "") for c in columns])
        elif len(row) != len(columns):
            raise FileSinkError(
                f"part file {path}: row of {len(row)} values for {len(columns)} columns"
            )
        else:
            rows.append(list(row))
    return csv_lines(rows)


def csv_lines(rows: list[list[Any]]) -> bytes:
    """Rows as CSV text (``\\n`` line ends), UTF-8 encoded."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()
