"""The flights demo's streaming job: three event-time outputs with exactly-once sinks.

Input: the event-log topic ``flights`` (raw rows as JSON, keyed by origin,
record time = actual departure). The job parses each row (a row it cannot
parse becomes a dead letter in ``flights.dlq``, with the reason), then
computes per output (see :mod:`weirflow.demos.flights.aggregates`):

* ``carrier_hourly``: per carrier, 1-hour tumbling windows;
* ``origin_3h``: per origin, 3-hour windows sliding by 1 hour;
* ``aircraft_rotations``: per aircraft, session windows with a 6-hour gap.

Event time is out of order by up to ~22 hours. The watermark trails the
largest departure seen by :data:`OUT_OF_ORDERNESS` (1 h); the fixed windows
accept late flights for :data:`LATENESS` (6 h) more and re-fire, and what is
later still goes to ``flights.<output>.late`` (a few hundred flights).
Sessions accept :data:`SESSION_LATENESS` (22 h), which with the 1 h bound
covers the data's worst lateness: a session state dropped too early would
let a late leg start a second session that no batch computation produces.

Every sink is an exactly-once (two-phase commit) event-log sink, so after
any crash the committed output equals a single clean run.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from weirflow import Dataflow, DeadLetter, LateRecord, WatermarkStrategy, WindowResult
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.demos.flights.aggregates import AGGREGATIONS
from weirflow.demos.flights.data import DLQ_TOPIC, TOPIC
from weirflow.demos.flights.parse import parse_record_value
from weirflow.demos.flights.verify import late_record
from weirflow.windows import SessionWindows, SlidingWindows, TumblingWindows

OUT_OF_ORDERNESS = timedelta(hours=1)
LATENESS = timedelta(hours=6)
SESSION_LATENESS = timedelta(hours=22)
OUTPUTS = ("carrier_hourly", "origin_3h", "aircraft_rotations")
GROUP = "flights-demo"

ASSIGNERS: dict[str, Any] = {
    "carrier_hourly": TumblingWindows(size=timedelta(hours=1)),
    "origin_3h": SlidingWindows(size=timedelta(hours=3), slide=timedelta(hours=1)),
    "aircraft_rotations": SessionWindows(gap=timedelta(hours=6)),
}


def output_topic(name: str) -> str:
    """Topic of an output's window results."""
    return f"flights.{name}"


def late_topic(name: str) -> str:
    """Topic of an output's late records."""
    return f"flights.{name}.late"


def window_record(r: WindowResult) -> dict[str, Any]:
    """A window result as the plain record the verifier reads."""
    return {
        "key": r.key,
        "window_start_ms": r.start_ms,
        "window_end_ms": r.end_ms,
        "firing": r.firing,
        "value": r.value,
    }


def late_flight_record(r: LateRecord) -> dict[str, Any]:
    """A late record as the plain record the verifier reads."""
    window = None if r.window_start_ms is None else (r.window_start_ms, r.window_end_ms)
    return late_record(r.value, window)  # type: ignore[arg-type]


def dead_letter_record(d: DeadLetter) -> dict[str, Any]:
    """A dead letter as a plain record: the raw row, the reason, where it failed."""
    raw = d.value.decode(errors="replace") if isinstance(d.value, bytes) else repr(d.value)
    return {
        "row": raw,
        "error_type": d.error_type,
        "reason": d.message,
        "operator": d.operator,
        "subtask": d.subtask,
        "attempts": d.attempts,
        "timestamp_ms": d.timestamp_ms,
    }


def build_flow(input_log: str | Path, output_log: str | Path) -> Dataflow:
    """Build the flights job.

    Args:
        input_log: event log holding the ``flights`` topic.
        output_log: event log receiving the outputs (topics created by
            :func:`create_output_topics`).

    Returns:
        The dataflow named ``flights``.
    """
    flow = Dataflow("flights")
    flights = flow.source(
        EventLogSource(input_log, TOPIC, group=GROUP),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(OUT_OF_ORDERNESS),
        name="flights",
    ).map(parse_record_value, on_error="dead_letter", name="parse")
    flights.dead_letters().map(dead_letter_record, name="dead_letter_record").sink(
        EventLogSink(output_log, DLQ_TOPIC), name="dlq"
    )
    for name in OUTPUTS:
        agg = AGGREGATIONS[name]  # type: ignore[index]
        lateness = SESSION_LATENESS if name == "aircraft_rotations" else LATENESS
        results = (
            flights.filter(agg.accepts, name=f"{name}.accepts")
            .key_by(agg.key)
            .window(ASSIGNERS[name], allowed_lateness=lateness)
            .aggregate(agg.as_aggregate_function(), name=name)
        )
        results.map(window_record, name=f"{name}.record").sink(
            EventLogSink(output_log, output_topic(name), key=lambda r: r["key"]),
            name=f"{name}.sink",
        )
        results.late_records().map(late_flight_record, name=f"{name}.late_record").sink(
            EventLogSink(output_log, late_topic(name)), name=f"{name}.late_sink"
        )
    return flow


def create_output_topics(output_log: str | Path, partitions: int = 2) -> None:
    """Create the job's output topics in ``output_log`` (existing ones are kept)."""
    from weirflow.eventlog import EventLog

    with EventLog(output_log) as lg:
        lg.create_topic(DLQ_TOPIC, 1, exist_ok=True)
        for name in OUTPUTS:
            lg.create_topic(output_topic(name), partitions, exist_ok=True)
            lg.create_topic(late_topic(name), 1, exist_ok=True)
