"""The flights demo's data side: every departure from New York City's airports in 2013.

Modules: :mod:`.data` (locate, read and order the raw rows, encode records),
:mod:`.parse` (raw row to :class:`Flight`, event time), :mod:`.aggregates`
(the three outputs as pure accumulator functions), :mod:`.reference` (the
batch computation), :mod:`.verify` (committed output against the reference)
and :mod:`.plot` (the PNG). The streaming job is built on top of these.
"""

from weirflow.demos.flights.aggregates import AGGREGATIONS, Aggregation, OutputName
from weirflow.demos.flights.data import (
    DLQ_TOPIC,
    PARTITIONS,
    TOPIC,
    DemoExtraMissingError,
    flights_csv_path,
    ingest_order,
    iter_raw_rows,
    key_of,
    raw_row_to_record_value,
)
from weirflow.demos.flights.parse import (
    Flight,
    FlightId,
    FlightParseError,
    event_time_ms,
    parse_flight,
    parse_record_value,
    scheduled_utc_ms,
)
from weirflow.demos.flights.reference import expected, windows_of
from weirflow.demos.flights.verify import Verification, late_record, verify

__all__ = [
    "AGGREGATIONS",
    "DLQ_TOPIC",
    "PARTITIONS",
    "TOPIC",
    "Aggregation",
    "DemoExtraMissingError",
    "Flight",
    "FlightId",
    "FlightParseError",
    "OutputName",
    "Verification",
    "event_time_ms",
    "expected",
    "flights_csv_path",
    "ingest_order",
    "iter_raw_rows",
    "key_of",
    "late_record",
    "parse_flight",
    "parse_record_value",
    "raw_row_to_record_value",
    "scheduled_utc_ms",
    "verify",
    "windows_of",
]
