"""The verifier accepts a correct output and names each kind of defect."""

from __future__ import annotations

import json
from typing import Any

from weirflow.demos.flights.parse import Flight
from weirflow.demos.flights.reference import expected
from weirflow.demos.flights.verify import late_record, verify

H = 3_600_000
MINUTE_MS = 60_000
DAY0 = 1_357_016_400_000  # 2013-01-01T05:00Z


def flight(at_min: int, number: int, *, delay: int | None = 0, carrier: str = "UA") -> Flight:
    scheduled = DAY0 + at_min * MINUTE_MS
    return Flight(
        carrier=carrier,
        flight=number,
        tailnum=f"N{number % 3}",
        origin="JFK",
        dest="BOS",
        scheduled_ms=scheduled,
        event_ms=scheduled + (delay or 0) * MINUTE_MS,
        dep_delay_min=delay,
        arr_delay_min=5,
        air_time_min=45,
        cancelled=delay is None,
    )


FLIGHTS = [
    flight(0, 1, delay=3),
    flight(20, 2, delay=40),
    flight(70, 3, delay=None),
    flight(130, 4, delay=-1, carrier="B6"),
    flight(200, 5, delay=16),
    flight(600, 6, delay=0),
]


def committed_from(want: dict[tuple[str, int, int], dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"key": k, "window_start_ms": s, "window_end_ms": e, "firing": 0, "value": dict(v)}
        for (k, s, e), v in want.items()
    ]


def test_correct_output_passes_for_every_output() -> None:
    for name in ("carrier_hourly", "origin_3h", "aircraft_rotations"):
        want = expected(name, FLIGHTS)
        result = verify(name, committed_from(want), [], FLIGHTS)
        assert result.ok, result
        assert result.windows_expected == len(want) > 0
        assert result.summary() == (
            f"{name}: OK ({len(want)} windows expected, {len(want)} records, 0 late)"
        )


def test_output_after_a_json_round_trip_passes() -> None:
    records = json.loads(json.dumps(committed_from(expected("carrier_hourly", FLIGHTS))))
    assert verify("carrier_hourly", records, [], FLIGHTS).ok


def test_missing_window() -> None:
    records = committed_from(expected("carrier_hourly", FLIGHTS))
    dropped = records.pop(1)
    result = verify("carrier_hourly", records, [], FLIGHTS)
    assert not result.ok
    assert result.missing == [
        (dropped["key"], dropped["window_start_ms"], dropped["window_end_ms"])
    ]
    assert "1 missing" in result.summary()
    assert result.summary().startswith("carrier_hourly: FAILED")


def test_unexpected_window() -> None:
    records = committed_from(expected("origin_3h", FLIGHTS))
    extra = {**records[0], "key": "LGA"}
    result = verify("origin_3h", [*records, extra], [], FLIGHTS)
    assert result.unexpected == [("LGA", extra["window_start_ms"], extra["window_end_ms"])]
    assert not result.ok


def test_duplicated_record() -> None:
    records = committed_from(expected("carrier_hourly", FLIGHTS))
    result = verify("carrier_hourly", [*records, dict(records[2])], [], FLIGHTS)
    r = records[2]
    assert result.duplicates == [(r["key"], r["window_start_ms"], r["window_end_ms"], 0)]
    assert result.missing == [] and result.mismatched == []
    assert not result.ok
    assert "1 duplicate" in result.summary()


def test_wrong_value() -> None:
    records = committed_from(expected("carrier_hourly", FLIGHTS))
    records[0]["value"]["departures"] += 1
    result = verify("carrier_hourly", records, [], FLIGHTS)
    assert len(result.mismatched) == 1
    window, want, got = result.mismatched[0]
    assert window == (records[0]["key"], records[0]["window_start_ms"], records[0]["window_end_ms"])
    assert got["departures"] == want["departures"] + 1
    assert not result.ok


def test_float_rounding_is_tolerated_but_a_real_difference_is_not() -> None:
    records = committed_from(expected("origin_3h", FLIGHTS))
    share = records[0]["value"]["delayed_share"]
    records[0]["value"]["delayed_share"] = share * (1 + 1e-12)
    assert verify("origin_3h", records, [], FLIGHTS).ok
    records[0]["value"]["delayed_share"] = share + 0.01
    assert len(verify("origin_3h", records, [], FLIGHTS).mismatched) == 1


def test_gap_in_firings() -> None:
    records = committed_from(expected("carrier_hourly", FLIGHTS))
    first = records[0]
    records.append({**first, "firing": 2})
    result = verify("carrier_hourly", records, [], FLIGHTS)
    window = (first["key"], first["window_start_ms"], first["window_end_ms"])
    assert result.firing_gaps == [(window, [0, 2])]
    assert not result.ok


def test_firings_must_start_at_zero() -> None:
    records = committed_from(expected("carrier_hourly", FLIGHTS))
    records[0] = {**records[0], "firing": 1}
    assert len(verify("carrier_hourly", records, [], FLIGHTS).firing_gaps) == 1


def test_last_firing_is_the_final_value() -> None:
    records = committed_from(expected("carrier_hourly", FLIGHTS))
    early = {**records[0], "value": {**records[0]["value"], "departures": 0}}
    final = {**records[0], "firing": 1}
    records[0] = early
    assert verify("carrier_hourly", [final, *records], [], FLIGHTS).ok
    # The same two records with the firings swapped: the stale value is final.
    records[0] = {**early, "firing": 1}
    swapped = verify("carrier_hourly", [{**final, "firing": 0}, *records], [], FLIGHTS)
    assert len(swapped.mismatched) == 1


def test_late_flights_are_excluded_from_the_reference() -> None:
    late_flight = FLIGHTS[1]
    want = expected("carrier_hourly", FLIGHTS, excluded={late_flight.flight_id})
    late = json.loads(json.dumps([late_record(late_flight)]))
    result = verify("carrier_hourly", committed_from(want), late, FLIGHTS)
    assert result.ok, result
    assert result.late == 1
    # Counting the late flight in a window as well is a mismatch.
    counted_too = verify(
        "carrier_hourly", committed_from(expected("carrier_hourly", FLIGHTS)), late, FLIGHTS
    )
    assert not counted_too.ok


def test_late_record_of_an_unknown_or_filtered_flight() -> None:
    want = expected("origin_3h", FLIGHTS)
    stranger = late_record(flight(0, 99))
    cancelled = late_record(FLIGHTS[2])  # origin_3h filters cancelled flights
    result = verify("origin_3h", committed_from(want), [stranger, cancelled], FLIGHTS)
    assert sorted(result.late_unknown) == sorted(
        [(tuple(stranger["flight_id"]), None), (tuple(cancelled["flight_id"]), None)]
    )
    assert not result.ok
    assert "2 unknown late" in result.summary()


def test_late_record_twice() -> None:
    late_flight = FLIGHTS[4]
    want = expected("carrier_hourly", FLIGHTS, excluded={late_flight.flight_id})
    twice = [late_record(late_flight), late_record(late_flight)]
    result = verify("carrier_hourly", committed_from(want), twice, FLIGHTS)
    assert result.late_duplicates == [(late_flight.flight_id, None)]
    assert result.late_unknown == []
    assert not result.ok


def test_late_record_for_one_sliding_window() -> None:
    late_flight = FLIGHTS[1]  # leaves 06:00Z: in the 3 h windows from 04:00, 05:00, 06:00
    start = late_flight.event_ms - late_flight.event_ms % H - 2 * H
    window = (start, start + 3 * H)
    want = expected("origin_3h", FLIGHTS, excluded_windows=[(late_flight.flight_id, *window)])
    late = [late_record(late_flight, window)]
    result = verify("origin_3h", committed_from(want), late, FLIGHTS)
    assert result.ok, result
    # Excluding it from every window instead is a different (wrong) answer.
    whole = committed_from(expected("origin_3h", FLIGHTS, excluded=[late_flight.flight_id]))
    assert not verify("origin_3h", whole, late, FLIGHTS).ok


def test_late_record_for_a_window_the_flight_is_not_in() -> None:
    late_flight = FLIGHTS[1]
    wrong = (late_flight.event_ms + 5 * H, late_flight.event_ms + 8 * H)
    late = [late_record(late_flight, wrong)]
    result = verify("origin_3h", committed_from(expected("origin_3h", FLIGHTS)), late, FLIGHTS)
    assert result.late_unknown == [(late_flight.flight_id, wrong)]


def test_session_output_takes_whole_flight_late_records_only() -> None:
    leg = FLIGHTS[0]
    late = [late_record(leg, (leg.event_ms, leg.event_ms + 6 * H))]
    want = expected("aircraft_rotations", FLIGHTS)
    result = verify("aircraft_rotations", committed_from(want), late, FLIGHTS)
    assert result.late_unknown == [(leg.flight_id, (leg.event_ms, leg.event_ms + 6 * H))]


def test_whole_and_per_window_late_records_for_one_flight_are_duplicates() -> None:
    late_flight = FLIGHTS[1]
    start = late_flight.event_ms - late_flight.event_ms % H
    window = (start, start + 3 * H)
    late = [late_record(late_flight), late_record(late_flight, window)]
    want = expected("origin_3h", FLIGHTS, excluded=[late_flight.flight_id])
    result = verify("origin_3h", committed_from(want), late, FLIGHTS)
    assert result.late_duplicates == [(late_flight.flight_id, None)]


def test_superseded_session_and_continued_firing_count() -> None:
    # Two legs of N1 that form one session; the first fired alone before
    # the second (late) leg extended it into the final session.
    legs = [flight(0, 1), flight(300, 4)]
    ((key, start, end), value) = next(iter(expected("aircraft_rotations", legs).items()))
    alone = expected("aircraft_rotations", legs[:1])
    ((_, start0, end0), value0) = next(iter(alone.items()))
    committed = [
        {
            "key": key,
            "window_start_ms": start0,
            "window_end_ms": end0,
            "firing": 0,
            "value": value0,
        },
        {"key": key, "window_start_ms": start, "window_end_ms": end, "firing": 1, "value": value},
    ]
    result = verify("aircraft_rotations", committed, [], legs)
    assert result.ok, result
    assert result.superseded == [(key, start0, end0)]
    assert "1 superseded" in result.summary()
    # A jump in the count is still a gap, and a session outside any
    # expected one is unexpected.
    committed.append({**committed[1], "firing": 3})
    committed.append({**committed[0], "key": "N9"})
    result = verify("aircraft_rotations", committed, [], legs)
    assert result.firing_gaps == [((key, start, end), [1, 3])]
    assert result.unexpected == [("N9", start0, end0)]
