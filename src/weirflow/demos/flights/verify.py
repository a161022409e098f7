"""Verifying the streaming job's committed output against the batch reference.

Input shapes (what the job's sinks commit):

* a committed window record: ``{"key": str, "window_start_ms": int,
  "window_end_ms": int, "firing": int, "value": dict}``. A window fires
  once when the watermark passes its end (firing 0) and again for each late
  update within the allowed lateness (1, 2, ...); the record with the
  highest firing is the window's final value;
* a late record (the late side output): a dict whose ``"flight_id"`` is
  the :attr:`~weirflow.demos.flights.parse.Flight.flight_id` of the flight
  set aside, as a tuple or as a list (JSON). Without window fields the
  flight was set aside for the whole output; with ``"window_start_ms"`` and
  ``"window_end_ms"`` only for that window (a sliding-window flight whose
  earliest window had closed while its later ones were open). Session
  output (``aircraft_rotations``) takes whole-flight late records only.
  :func:`late_record` builds both kinds.

:func:`verify` checks, for one output: every expected window is present
with its final value, no other window is, no ``(key, window, firing)`` is
committed twice, each window's firings are exactly ``0..n``, and every late
record names a distinct (flight, window) that this output takes. Late
flights are excluded from the reference, as the job excluded them.

Session windows change identity when a late leg extends them: the smaller
session fired before the leg arrived, the merged one fires again as a new
window. A committed session lying inside an expected session of the same
key is therefore *superseded*, listed but not a defect. The merged session
continues the firing count of the sessions it absorbed, so a session's
firings must be consecutive but may start above 0.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from weirflow.demos.flights.aggregates import AGGREGATIONS, OutputName
from weirflow.demos.flights.parse import Flight
from weirflow.demos.flights.reference import WindowKey, expected, windows_of

_REL_TOL = 1e-9
_SESSION_OUTPUT = "aircraft_rotations"

LateKey = tuple[tuple[Any, ...], tuple[Any, Any] | None]
"""A late record's identity: flight id, and its window or ``None`` for the whole output.

Loosely typed because it is read from records as they were committed; a
malformed one is reported, not trusted.
"""


def late_record(flight: Flight, window: tuple[int, int] | None = None) -> dict[str, Any]:
    """The late side output record for a flight (the shape :func:`verify` reads).

    Args:
        flight: the flight that arrived after the allowed lateness.
        window: ``(window_start_ms, window_end_ms)`` when the flight is set
            aside for that window only; ``None`` for the whole output.

    Returns:
        ``{"flight_id": [carrier, flight, scheduled_ms, origin],
        "event_ms": int}``, plus ``window_start_ms`` and ``window_end_ms``
        when ``window`` is given; plain data for any sink.
    """
    out: dict[str, Any] = {"flight_id": list(flight.flight_id), "event_ms": flight.event_ms}
    if window is not None:
        out["window_start_ms"], out["window_end_ms"] = window
    return out


@dataclass(slots=True)
class Verification:
    """Outcome of :func:`verify` for one output; empty defect lists mean correct.

    Attributes:
        output_name: the output checked.
        windows_expected: windows in the reference (after excluding late flights).
        records: committed records seen.
        late: late records seen.
        missing: expected windows with no committed record.
        unexpected: committed windows the reference does not have (and,
            for sessions, that no expected session contains).
        mismatched: ``(window, expected value, final committed value)``.
        duplicates: ``(key, start_ms, end_ms, firing)`` committed more than once.
        firing_gaps: ``(window, sorted distinct firings)`` where they are not
            ``0..n`` (for sessions: not consecutive).
        late_unknown: late records (as :data:`LateKey`) naming a flight this
            output does not take, a window the flight is not in, or a
            window of the session output.
        late_duplicates: late records naming a flight (or flight and window)
            already set aside by another late record.
        superseded: committed sessions contained in a larger expected
            session of the same key (informational, not a defect).
    """

    output_name: str
    windows_expected: int = 0
    records: int = 0
    late: int = 0
    missing: list[WindowKey] = field(default_factory=list)
    unexpected: list[WindowKey] = field(default_factory=list)
    mismatched: list[tuple[WindowKey, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    duplicates: list[tuple[str, int, int, int]] = field(default_factory=list)
    firing_gaps: list[tuple[WindowKey, list[int]]] = field(default_factory=list)
    late_unknown: list[LateKey] = field(default_factory=list)
    late_duplicates: list[LateKey] = field(default_factory=list)
    superseded: list[WindowKey] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """``True`` when no defect of any kind was found."""
        return not (
            self.missing
            or self.unexpected
            or self.mismatched
            or self.duplicates
            or self.firing_gaps
            or self.late_unknown
            or self.late_duplicates
        )

    def summary(self) -> str:
        """One line: ``"<output>: OK (...)"`` or ``"<output>: FAILED, <defect counts> (...)"``."""
        counts = (
            f"{self.windows_expected} windows expected, {self.records} records, {self.late} late"
        )
        if self.superseded:
            counts += f", {len(self.superseded)} superseded"
        if self.ok:
            return f"{self.output_name}: OK ({counts})"
        defects = {
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "mismatched": len(self.mismatched),
            "duplicate": len(self.duplicates),
            "firing gaps": len(self.firing_gaps),
            "unknown late": len(self.late_unknown),
            "duplicate late": len(self.late_duplicates),
        }
        found = ", ".join(f"{n} {what}" for what, n in defects.items() if n)
        return f"{self.output_name}: FAILED, {found} ({counts})"


def _values_equal(want: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    # Means and shares are float divisions of integer sums; a tolerance keeps
    # the check independent of whether the sink stored them as JSON text.
    if set(want) != set(got):
        return False
    for name, w in want.items():
        g = got[name]
        if isinstance(w, float) and isinstance(g, int | float) and not isinstance(g, bool):
            if not math.isclose(w, g, rel_tol=_REL_TOL, abs_tol=_REL_TOL):
                return False
        elif w != g:
            return False
    return True


def _late_key(record: Mapping[str, Any]) -> LateKey:
    raw = record.get("flight_id")
    flight_id = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
    start, end = record.get("window_start_ms"), record.get("window_end_ms")
    window = None if start is None and end is None else (start, end)
    return flight_id, window


def _check_late(
    result: Verification,
    output_name: OutputName,
    late: Sequence[Mapping[str, Any]],
    flights: list[Flight],
) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Classify late records; return the whole-flight and per-window exclusions."""
    agg = AGGREGATIONS[output_name]
    taken: dict[tuple[Any, ...], Flight] = {f.flight_id: f for f in flights if agg.accepts(f)}
    seen = Counter(_late_key(record) for record in late)
    windowed_ids = {flight_id for flight_id, window in seen if window is not None}
    whole: set[tuple[Any, ...]] = set()
    per_window: set[tuple[Any, ...]] = set()
    for (flight_id, window), n in seen.items():
        flight = taken.get(flight_id)
        if flight is None or (
            window is not None
            and (
                output_name == _SESSION_OUTPUT
                or window not in windows_of(output_name, flight.event_ms)
            )
        ):
            result.late_unknown.append((flight_id, window))
            continue
        if n > 1 or (window is None and flight_id in windowed_ids):
            result.late_duplicates.append((flight_id, window))
        if window is None:
            whole.add(flight_id)
        else:
            per_window.add((flight_id, *window))
    return whole, per_window


def _final_values(
    result: Verification, committed: Sequence[Mapping[str, Any]], sessions: bool
) -> dict[WindowKey, Mapping[str, Any]]:
    by_window: dict[WindowKey, dict[int, Mapping[str, Any]]] = defaultdict(dict)
    for record in committed:
        window = (record["key"], record["window_start_ms"], record["window_end_ms"])
        firing = record["firing"]
        if firing in by_window[window]:
            result.duplicates.append((*window, firing))
        by_window[window][firing] = record["value"]
    finals = {}
    for window, firings in by_window.items():
        order = sorted(firings)
        first = order[0] if sessions else 0
        if order != list(range(first, first + len(order))):
            result.firing_gaps.append((window, order))
        finals[window] = firings[order[-1]]
    return finals


def _split_superseded(
    result: Verification, extra: list[WindowKey], want: Mapping[WindowKey, Any]
) -> None:
    sessions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, start, end in want:
        sessions[key].append((start, end))
    for window in extra:
        key, start, end = window
        inside = any(s <= start and end <= e for s, e in sessions.get(key, ()))
        (result.superseded if inside else result.unexpected).append(window)


def verify(
    output_name: OutputName,
    committed: Sequence[Mapping[str, Any]],
    late: Sequence[Mapping[str, Any]],
    flights: Iterable[Flight],
) -> Verification:
    """Check one output of the streaming job against the batch reference.

    Steps:

    1. classify the late records (each a distinct flight, or flight and
       window, that this output takes);
    2. compute the reference without what the late records set aside;
    3. group committed records by window: detect duplicate firings and
       firings that are not ``0..n`` (sessions: not consecutive); take the
       highest firing as final;
    4. compare windows (missing; unexpected, or superseded for sessions)
       and final values (mismatched; floats within a relative 1e-9).

    Args:
        output_name: which output the records belong to.
        committed: the committed window records, any order (shape in the
            module docstring).
        late: the late side output records of this output.
        flights: all parsed input flights (the ones the job parsed; dead
            letters are not flights).

    Returns:
        A :class:`Verification`; ``.ok`` is ``True`` when nothing is wrong.

    Raises:
        KeyError: ``output_name`` is unknown, or a committed record lacks
            ``key``, ``window_start_ms``, ``window_end_ms``, ``firing`` or ``value``.
    """
    flights = list(flights)
    result = Verification(output_name=output_name, records=len(committed), late=len(late))
    whole, per_window = _check_late(result, output_name, late, flights)
    want = expected(output_name, flights, whole, per_window)
    result.windows_expected = len(want)
    finals = _final_values(result, committed, sessions=output_name == _SESSION_OUTPUT)
    result.missing.extend(sorted(want.keys() - finals.keys()))
    extra = sorted(finals.keys() - want.keys())
    if output_name == _SESSION_OUTPUT:
        _split_superseded(result, extra, want)
    else:
        result.unexpected.extend(extra)
    for window in sorted(want.keys() & finals.keys()):
        if not _values_equal(want[window], finals[window]):
            result.mismatched.append((window, want[window], dict(finals[window])))
    return result
