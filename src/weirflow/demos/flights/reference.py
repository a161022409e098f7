"""The batch reference: each output of the flights demo computed plainly from a list.

This is what the streaming job's output is verified against. It uses the
same filters, keys and accumulator functions as the job
(:mod:`weirflow.demos.flights.aggregates`), but no watermarks, no state
and no order: windows are assigned directly from event time.

Window semantics (those of Apache Flink's assigners, epoch-aligned, no
offset; a window ``[start_ms, end_ms)`` includes its start and excludes its
end):

* tumbling, size ``s``: a flight at ``t`` is in ``[t - t mod s, + s)``;
* sliding, size ``s``, slide ``d``: in every ``[k*d, k*d + s)`` that
  contains ``t``, i.e. ``s / d`` windows;
* session, gap ``g``: each flight starts ``[t, t + g)``; windows of one key
  that overlap *or touch* merge (Flink's ``TimeWindow.intersects``), so two
  legs of an aircraft share a session when the later departs at most ``g``
  after the earlier; a session is ``[first t, last t + g)``.

Late records: a flight that the streaming job routed to its late side output
for an output is passed in ``excluded`` and counted nowhere for that output;
sessions are formed from the remaining flights only. A flight set aside for
one tumbling or sliding window only is passed in ``excluded_windows``.

What the session reference assumes of the job: once a session has been
purged (the watermark passed its end plus the allowed lateness), a leg of
the same aircraft at or before that session's end must go to the late
output. A window operator alone would open a new session for it, split from
the purged one, which no batch computation can reproduce; keeping per
aircraft the end of its latest purged session (one int of keyed state) is
enough to route such a leg. Without it, verification reports the split
(a missing session and two superseded ones).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from datetime import timedelta
from typing import Any

from weirflow.demos.flights.aggregates import (
    AGGREGATIONS,
    CARRIER_HOURLY_SIZE,
    ORIGIN_3H_SIZE,
    ORIGIN_3H_SLIDE,
    ROTATION_GAP,
    Acc,
    Aggregation,
    OutputName,
)
from weirflow.demos.flights.parse import Flight, FlightId

WindowKey = tuple[str, int, int]
"""``(key, window_start_ms, window_end_ms)`` of one window of one key."""


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def tumbling_window(t_ms: int, size_ms: int) -> tuple[int, int]:
    """The tumbling window holding event time ``t_ms``.

    Args:
        t_ms: event time, epoch ms.
        size_ms: window size, ms (> 0).

    Returns:
        ``(start_ms, end_ms)`` with ``start_ms <= t_ms < end_ms`` and
        ``start_ms`` a multiple of ``size_ms``.
    """
    start = t_ms - t_ms % size_ms
    return start, start + size_ms


def sliding_windows(t_ms: int, size_ms: int, slide_ms: int) -> list[tuple[int, int]]:
    """The sliding windows holding event time ``t_ms``, latest start first.

    Args:
        t_ms: event time, epoch ms.
        size_ms: window size, ms (> 0).
        slide_ms: slide, ms (> 0); starts are multiples of it.

    Returns:
        ``[(start_ms, end_ms), ...]``, each with ``start_ms <= t_ms < end_ms``.
    """
    windows = []
    start = t_ms - t_ms % slide_ms
    while start > t_ms - size_ms:
        windows.append((start, start + size_ms))
        start -= slide_ms
    return windows


def session_windows(times_ms: Iterable[int], gap_ms: int) -> list[tuple[int, int]]:
    """Sessions formed by event times of one key, merging windows that overlap or touch.

    Args:
        times_ms: event times, epoch ms, any order, duplicates allowed.
        gap_ms: session gap, ms (> 0).

    Returns:
        ``[(start_ms, end_ms), ...]`` sorted by start, disjoint and
        non-touching; ``end_ms`` is the last event time of the session plus
        ``gap_ms``.
    """
    sessions: list[tuple[int, int]] = []
    for t in sorted(times_ms):
        if sessions and t <= sessions[-1][1]:
            sessions[-1] = (sessions[-1][0], max(sessions[-1][1], t + gap_ms))
        else:
            sessions.append((t, t + gap_ms))
    return sessions


def _accumulate(
    agg: Aggregation, assigned: Iterable[tuple[WindowKey, Flight]]
) -> dict[WindowKey, dict[str, Any]]:
    accs: dict[WindowKey, Acc] = {}
    for window, flight in assigned:
        accs[window] = agg.add(accs[window] if window in accs else agg.create(), flight)
    return {window: agg.result(acc) for window, acc in accs.items()}


def windows_of(output_name: OutputName, event_ms: int) -> list[tuple[int, int]]:
    """The windows an event time falls in, for the outputs with fixed windows.

    Args:
        output_name: ``"carrier_hourly"`` (1 h tumbling) or ``"origin_3h"``
            (3 h sliding by 1 h).
        event_ms: event time, epoch ms.

    Returns:
        ``[(window_start_ms, window_end_ms), ...]``: one window for
        ``carrier_hourly``, three for ``origin_3h`` (latest start first).

    Raises:
        ValueError: ``output_name`` is ``"aircraft_rotations"`` (session
            windows depend on the other flights) or unknown.
    """
    if output_name == "carrier_hourly":
        return [tumbling_window(event_ms, _ms(CARRIER_HOURLY_SIZE))]
    if output_name == "origin_3h":
        return sliding_windows(event_ms, _ms(ORIGIN_3H_SIZE), _ms(ORIGIN_3H_SLIDE))
    raise ValueError(f"{output_name!r} has no fixed windows")


def _assign_fixed(agg: Aggregation, flights: list[Flight]) -> Iterator[tuple[WindowKey, Flight]]:
    for f in flights:
        key = agg.key(f)
        for start, end in windows_of(agg.name, f.event_ms):
            yield (key, start, end), f


def _assign_aircraft_rotations(
    agg: Aggregation, flights: list[Flight]
) -> Iterator[tuple[WindowKey, Flight]]:
    gap = _ms(ROTATION_GAP)
    by_key: dict[str, list[Flight]] = defaultdict(list)
    for f in flights:
        by_key[agg.key(f)].append(f)
    for key, legs in by_key.items():
        legs.sort(key=lambda f: f.event_ms)
        sessions = session_windows((f.event_ms for f in legs), gap)
        i = 0
        for f in legs:
            while f.event_ms >= sessions[i][1]:
                i += 1
            yield (key, *sessions[i]), f


_ASSIGNERS = {
    "carrier_hourly": _assign_fixed,
    "origin_3h": _assign_fixed,
    "aircraft_rotations": _assign_aircraft_rotations,
}


def expected(
    output_name: OutputName,
    flights: Iterable[Flight],
    excluded: Collection[FlightId] = (),
    excluded_windows: Collection[tuple[FlightId, int, int]] = (),
) -> dict[WindowKey, dict[str, Any]]:
    """Compute one output of the demo as a batch, the ground truth for verification.

    Args:
        output_name: ``"carrier_hourly"``, ``"origin_3h"`` or
            ``"aircraft_rotations"``.
        flights: the parsed input flights, any order (unparseable rows are
            not flights and are not here).
        excluded: identities (:attr:`Flight.flight_id`, as tuples or as
            lists after a JSON round trip) of flights that went to this
            output's late side output as a whole; they count nowhere.
        excluded_windows: ``(flight_id, window_start_ms, window_end_ms)``
            of a flight set aside for one window only (a window operator
            that, like Apache Flink's, adds a flight to those of its
            windows still open and drops it from the others); the flight
            still counts in its other windows. Tumbling and sliding windows
            only.

    Returns:
        Window ``(key, window_start_ms, window_end_ms)`` to its result dict
        (the ``result`` of the output's :class:`Aggregation`). Only windows
        with at least one flight appear.

    Raises:
        KeyError: ``output_name`` is not one of the three outputs.
        ValueError: ``excluded_windows`` is given for the session output,
            whose windows only exist once their flights are known.
    """
    agg = AGGREGATIONS[output_name]
    assign = _ASSIGNERS[output_name]
    skip = {tuple(flight_id) for flight_id in excluded}
    skip_window = {(tuple(fid), start, end) for fid, start, end in excluded_windows}
    if skip_window and output_name == "aircraft_rotations":
        raise ValueError("aircraft_rotations has session windows: exclude whole flights")
    taken = [f for f in flights if agg.accepts(f) and f.flight_id not in skip]
    assigned = assign(agg, taken)
    if skip_window:
        assigned = (
            (window, f)
            for window, f in assigned
            if (f.flight_id, window[1], window[2]) not in skip_window
        )
    return _accumulate(agg, assigned)
