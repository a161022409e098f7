"""Inputs and output checks of ``scaling.py``: event logs written once, committed output verified.

* windowed_count: the WORKLOADS.md events, as JSON, into a 2-partition topic
  keyed by user (record time = ``ts``); checked against the plain loop
  window by window, and for N = 2,000,000 against the WORKLOADS.md figures.
* flights: the first ``rows`` rows of ``flights.csv`` (all by default) in the
  demo's ingest order and encoding, into a 2-partition topic, spread round
  robin so that each source subtask parses half (the demo's 3 partitions
  keyed by origin would give one worker two thirds); checked with the demo's
  own verifier (every window exact, dead letters counted).
* Nexmark: the deterministic generator; each query's final answer is
  compared with the plain batch computation of ``benchmarks/nexmark/reference.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "nexmark"))

import workloads  # noqa: E402
from weirflow.eventlog import EventLog, Record  # noqa: E402

EXPECTED_FULL = {"events": 2_000_000, "windows": 199_984, "amounts": 100_966_746}
"""The WORKLOADS.md checks for the full input."""
PARTITIONS = 2
BATCH = 10_000


def _append_all(log_dir: Path, topic: str, records: Iterable[Record]) -> None:
    with EventLog(log_dir) as lg:
        lg.create_topic(topic, PARTITIONS)
        for chunk in _chunks(records):
            lg.append(topic, chunk)


def _chunks(records: Iterable[Record]) -> Iterable[list[Record]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, BATCH)):
        yield chunk


def raw_values(log_dir: Path, topic: str) -> Iterator[bytes]:
    """Every committed value of ``topic`` in ``log_dir``, partition by partition."""
    with EventLog(log_dir) as lg:
        for p in range(lg.partition_count(topic)):
            pos = lg.start_offset(topic, p)
            while batch := lg.read(topic, p, pos, max_records=BATCH, max_bytes=64 << 20):
                yield from (r.value for r in batch if r.value is not None)
                pos = batch[-1].offset + 1


def read_values(log_dir: Path, topic: str) -> list[Any]:
    """Every committed value of ``topic`` in ``log_dir``, JSON-decoded."""
    return [json.loads(v) for v in raw_values(log_dir, topic)]


def create_output(log_dir: Path, topics: Iterable[str]) -> None:
    """Create the output topics of one run (2 partitions each)."""
    with EventLog(log_dir) as lg:
        for t in topics:
            lg.create_topic(t, PARTITIONS, exist_ok=True)


# -- windowed_count ---------------------------------------------------------------


def write_windowed_count(log_dir: Path, n: int) -> None:
    """Write the ``n`` events to topic ``events`` of ``log_dir``."""
    enc = msgspec.json.encode
    _append_all(
        log_dir,
        "events",
        (Record(enc(e), e["user"].encode(), e["ts"]) for e in workloads.events(n)),
    )


def check_windowed_count(out_log: Path, n: int) -> tuple[int, list[str]]:
    """Results and failed checks of a windowed_count run (plain loop, WORKLOADS.md figures)."""
    rows = sorted(tuple(r) for r in read_values(out_log, "results"))
    errors = []
    if sum(r[2] for r in rows) != n:
        errors.append(f"counts sum to {sum(r[2] for r in rows):,}, expected {n:,}")
    if n == EXPECTED_FULL["events"]:
        if len(rows) != EXPECTED_FULL["windows"]:
            errors.append(f"{len(rows):,} windows, expected 199,984")
        if sum(r[3] for r in rows) != EXPECTED_FULL["amounts"]:
            errors.append(f"amounts sum to {sum(r[3] for r in rows):,}, expected 100,966,746")
    if rows != sorted(workloads.plain_loop(n)):
        errors.append("window results differ from the plain loop's")
    return len(rows), errors


# -- flights ----------------------------------------------------------------------


def flight_rows(rows: int | None) -> list[dict[str, str]]:
    """The first ``rows`` raw rows of ``flights.csv`` in file order (all when ``None``)."""
    from weirflow.demos.flights import iter_raw_rows

    return list(itertools.islice(iter_raw_rows(), rows))


def write_flights(log_dir: Path, rows: int | None) -> int:
    """Ingest the rows as the demo does (order, value, key, time) into 2 partitions; return them."""
    from weirflow.demos.flights import (
        DLQ_TOPIC,
        TOPIC,
        ingest_order,
        key_of,
        parse_flight,
        raw_row_to_record_value,
    )
    from weirflow.demos.flights.data import scheduled_ms_of_row
    from weirflow.errors import WeirflowError

    ordered = ingest_order(flight_rows(rows))

    def records() -> Iterable[Record]:
        for i, row in enumerate(ordered):
            try:
                ts = parse_flight(row).event_ms
            except WeirflowError:
                ts = scheduled_ms_of_row(row) or 0
            yield Record(raw_row_to_record_value(row), key_of(row), ts, partition=i % PARTITIONS)

    _append_all(log_dir, TOPIC, records())
    with EventLog(log_dir) as lg:
        lg.create_topic(DLQ_TOPIC, 1, exist_ok=True)
    return len(ordered)


def check_flights(in_log: Path, out_log: Path, total: int) -> tuple[int, list[str]]:
    """Window results and failed checks of a flights run (the demo's verifier, per output)."""
    from weirflow.demos.flights import (
        DLQ_TOPIC,
        TOPIC,
        FlightParseError,
        parse_record_value,
        verify,
    )
    from weirflow.demos.flights.job import OUTPUTS, late_topic, output_topic

    flights = []
    for raw in raw_values(in_log, TOPIC):
        with contextlib.suppress(FlightParseError):
            flights.append(parse_record_value(raw))
    errors = []
    dead = len(read_values(out_log, DLQ_TOPIC))
    if dead != total - len(flights):
        errors.append(f"{dead} dead letters, expected {total - len(flights)}")
    results = 0
    for name in OUTPUTS:
        committed = read_values(out_log, output_topic(name))
        results += len(committed)
        v = verify(name, committed, read_values(out_log, late_topic(name)), flights)
        if not v.ok:
            errors.append(v.summary())
    return results, errors


def flights_batch(rows: int | None) -> tuple[float, int]:
    """The three flights outputs recomputed plainly: read the CSV, parse, aggregate.

    Returns:
        ``(seconds, windows)`` for the whole recomputation in this process.
    """
    from weirflow.demos.flights import FlightParseError, expected, iter_raw_rows, parse_flight
    from weirflow.demos.flights.job import OUTPUTS

    start = time.perf_counter()
    flights = []
    for row in itertools.islice(iter_raw_rows(), rows):
        with contextlib.suppress(FlightParseError):
            flights.append(parse_flight(row))
    windows = sum(len(expected(name, flights)) for name in OUTPUTS)  # type: ignore[arg-type]
    return time.perf_counter() - start, windows


# -- Nexmark ----------------------------------------------------------------------


def nexmark_expected(queries: Iterable[str], events: int) -> dict[str, list[Any]]:
    """Each query's batch answer over the first ``events`` Nexmark events."""
    import reference

    from weirflow.connectors.nexmark import NexmarkGenerator

    all_events = NexmarkGenerator().events(0, 1, events)
    return {q: reference.REFERENCES[q](all_events) for q in queries}


def check_nexmark(out_log: Path, query: str, expected: list[Any]) -> tuple[int, list[str]]:
    """Results and failed checks of a Nexmark run: its final answer equals the batch one."""
    import reference

    values = read_values(out_log, "results")
    rows = [tuple(v.values()) if isinstance(v, dict) else tuple(v) for v in values]
    got = sorted(rows) if query == "q0" else reference.final(query, rows)
    if got == expected:
        return len(values), []
    return len(values), [f"{query}: final answer differs from the batch computation"]
