"""The batch reference: window assignment and each output on tiny inputs with known answers."""

from __future__ import annotations

import pytest

from weirflow.demos.flights.parse import Flight
from weirflow.demos.flights.reference import (
    expected,
    session_windows,
    sliding_windows,
    tumbling_window,
)

H = 3_600_000
MINUTE_MS = 60_000
DAY0 = 1_357_016_400_000  # 2013-01-01T05:00Z, a multiple of 1 h


def flight(
    at_min: int,
    *,
    carrier: str = "UA",
    number: int = 1,
    tailnum: str | None = "N1",
    origin: str = "EWR",
    dest: str = "BOS",
    delay: int | None = 0,
    arr_delay: int | None = 0,
    air_time: int | None = 50,
) -> Flight:
    """A flight scheduled ``at_min`` minutes after DAY0, leaving ``delay`` minutes late."""
    scheduled = DAY0 + at_min * MINUTE_MS
    return Flight(
        carrier=carrier,
        flight=number,
        tailnum=tailnum,
        origin=origin,
        dest=dest,
        scheduled_ms=scheduled,
        event_ms=scheduled + (delay or 0) * MINUTE_MS,
        dep_delay_min=delay,
        arr_delay_min=arr_delay,
        air_time_min=air_time,
        cancelled=delay is None,
    )


# window assignment


def test_tumbling_window_bounds() -> None:
    assert tumbling_window(DAY0, H) == (DAY0, DAY0 + H)
    assert tumbling_window(DAY0 + H - 1, H) == (DAY0, DAY0 + H)
    assert tumbling_window(DAY0 + H, H) == (DAY0 + H, DAY0 + 2 * H)


def test_sliding_windows_hold_the_time() -> None:
    t = DAY0 + 90 * MINUTE_MS
    assert sliding_windows(t, 3 * H, H) == [
        (DAY0 + H, DAY0 + 4 * H),
        (DAY0, DAY0 + 3 * H),
        (DAY0 - H, DAY0 + 2 * H),
    ]
    assert sliding_windows(DAY0, 3 * H, H)[0] == (DAY0, DAY0 + 3 * H)
    assert sliding_windows(DAY0, 3 * H, H)[-1] == (DAY0 - 2 * H, DAY0 + H)


def test_sessions_merge_when_touching_and_split_beyond_the_gap() -> None:
    gap = 6 * H
    assert session_windows([0, 6 * H], gap) == [(0, 12 * H)]
    assert session_windows([0, 6 * H + 1], gap) == [(0, 6 * H), (6 * H + 1, 12 * H + 1)]
    assert session_windows([5 * H, 0, 2 * H, 2 * H, 20 * H], gap) == [
        (0, 11 * H),
        (20 * H, 26 * H),
    ]
    assert session_windows([], gap) == []


# expected()


def test_carrier_hourly_known_answer() -> None:
    flights = [
        flight(0, delay=20),  # leaves 05:20Z, hour 0
        flight(10, delay=55),  # leaves 06:05Z, hour 1
        flight(30, delay=None),  # cancelled at 05:30Z, hour 0
        flight(40, delay=-2, carrier="B6"),
    ]
    assert expected("carrier_hourly", flights) == {
        ("UA", DAY0, DAY0 + H): {
            "departures": 1,
            "cancellations": 1,
            "mean_dep_delay_min": 20.0,
            "max_dep_delay_min": 20,
            "delayed_15": 1,
        },
        ("UA", DAY0 + H, DAY0 + 2 * H): {
            "departures": 1,
            "cancellations": 0,
            "mean_dep_delay_min": 55.0,
            "max_dep_delay_min": 55,
            "delayed_15": 1,
        },
        ("B6", DAY0, DAY0 + H): {
            "departures": 1,
            "cancellations": 0,
            "mean_dep_delay_min": -2.0,
            "max_dep_delay_min": -2,
            "delayed_15": 0,
        },
    }


def test_origin_3h_known_answer() -> None:
    flights = [
        flight(0, delay=30),  # 05:30Z
        flight(60, delay=0),  # 06:00Z
        flight(0, delay=None),  # cancelled: filtered
    ]
    got = expected("origin_3h", flights)

    def share(departures: int, delayed: int) -> dict[str, object]:
        return {
            "departures": departures,
            "delayed_15": delayed,
            "delayed_share": delayed / departures,
        }

    assert got == {
        ("EWR", DAY0 - 2 * H, DAY0 + H): share(1, 1),
        ("EWR", DAY0 - H, DAY0 + 2 * H): share(2, 1),
        ("EWR", DAY0, DAY0 + 3 * H): share(2, 1),
        ("EWR", DAY0 + H, DAY0 + 4 * H): share(1, 0),
    }


def test_aircraft_rotations_known_answer() -> None:
    flights = [
        flight(0, origin="EWR", dest="BOS", air_time=40, arr_delay=3),
        flight(4 * 60, number=2, origin="LGA", dest="ORD", air_time=120, arr_delay=-7),
        flight(16 * 60, number=3, origin="JFK", dest="LAX", air_time=None, arr_delay=None),
        flight(60, tailnum=None),  # no aircraft: filtered
        flight(90, delay=None),  # cancelled: filtered
        flight(30, tailnum="N2", origin="JFK", dest="SFO", air_time=330, arr_delay=12),
    ]
    assert expected("aircraft_rotations", flights) == {
        ("N1", DAY0, DAY0 + 10 * H): {
            "legs": 2,
            "first_origin": "EWR",
            "last_dest": "ORD",
            "air_time_min": 160,
            "air_time_na_legs": 0,
            "arr_delay_min": -4,
            "arr_delay_na_legs": 0,
        },
        ("N1", DAY0 + 16 * H, DAY0 + 22 * H): {
            "legs": 1,
            "first_origin": "JFK",
            "last_dest": "LAX",
            "air_time_min": 0,
            "air_time_na_legs": 1,
            "arr_delay_min": 0,
            "arr_delay_na_legs": 1,
        },
        ("N2", DAY0 + 30 * MINUTE_MS, DAY0 + 30 * MINUTE_MS + 6 * H): {
            "legs": 1,
            "first_origin": "JFK",
            "last_dest": "SFO",
            "air_time_min": 330,
            "air_time_na_legs": 0,
            "arr_delay_min": 12,
            "arr_delay_na_legs": 0,
        },
    }


def test_excluding_a_late_flight_splits_a_session() -> None:
    legs = [flight(0), flight(5 * 60, number=2), flight(10 * 60, number=3)]
    whole = expected("aircraft_rotations", legs)
    assert list(whole) == [("N1", DAY0, DAY0 + 16 * H)]
    # The ids may come back from JSON as lists.
    without_middle = expected("aircraft_rotations", legs, excluded=[list(legs[1].flight_id)])
    assert sorted(without_middle) == [
        ("N1", DAY0, DAY0 + 6 * H),
        ("N1", DAY0 + 10 * H, DAY0 + 16 * H),
    ]
    assert all(v["legs"] == 1 for v in without_middle.values())


def test_excluded_flight_counts_nowhere() -> None:
    a, b = flight(0, delay=0), flight(10, number=2, delay=40)
    got = expected("carrier_hourly", [a, b], excluded={b.flight_id})
    assert got[("UA", DAY0, DAY0 + H)]["departures"] == 1
    assert got[("UA", DAY0, DAY0 + H)]["max_dep_delay_min"] == 0
    assert ("UA", DAY0 + H, DAY0 + 2 * H) not in got


def test_unknown_output_raises() -> None:
    with pytest.raises(KeyError):
        expected("per_gate", [flight(0)])  # type: ignore[arg-type]
