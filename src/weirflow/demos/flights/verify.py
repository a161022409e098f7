"""Verifying the streaming job's committed output against the batch reference.

Input shapes (what the job's sinks commit):

* a committed window record: ``{"key": str, "window_start_ms": int,
  "window_end_ms": int, "firing": int, "value": dict}``. A window fires
  once when the watermark passes its end (firing 0) and again for each late
  update within the allowed lateness (1, 2, ...); the record with the
  highest firing is the window's final value;
* a late record (the late side output): a dict whose ``"flight_id"`` is
  the :attr:`~weirflow.demos.flights.parse.Flight.flight_id` of the flight
  set aside, as a tuple or as a list (JSON); :func:`late_record` builds one.

:func:`verify` checks, for one output: every expected window is present
with its final value, no other window is, no ``(key, window, firing)`` is
committed twice, each window's firings are exactly ``0..n``, and every late
record names a distinct flight that this output takes. Flights in late
records are excluded from the reference, as the job excluded them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from weirflow.demos.flights.aggregates import AGGREGATIONS, OutputName
from weirflow.demos.flights.parse import Flight, FlightId
from weirflow.demos.flights.reference import WindowKey, expected

_REL_TOL = 1e-9


def late_record(flight: Flight) -> dict[str, Any]:
    """The late side output record for a flight (what :func:`verify` expects).

    Args:
        flight: the flight that arrived after its windows' allowed lateness.

    Returns:
        ``{"flight_id": [carrier, flight, scheduled_ms, origin],
        "event_ms": int}``, plain data for any sink.
    """
    return {"flight_id": list(flight.flight_id), "event_ms": flight.event_ms}


@dataclass(slots=True)
class Verification:
    """Outcome of :func:`verify` for one output; empty defect lists mean correct.

    Attributes:
        output_name: the output checked.
        windows_expected: windows in the reference (after excluding late flights).
        records: committed records seen.
        late: late records seen.
        missing: expected windows with no committed record.
        unexpected: committed windows the reference does not have.
        mismatched: ``(window, expected value, final committed value)``.
        duplicates: ``(key, start_ms, end_ms, firing)`` committed more than once.
        firing_gaps: ``(window, sorted distinct firings)`` where they are not ``0..n``.
        late_unknown: flight ids in late records that are not input flights
            taken by this output.
        late_duplicates: flight ids that appear in more than one late record.
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
    late_unknown: list[FlightId] = field(default_factory=list)
    late_duplicates: list[FlightId] = field(default_factory=list)

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
        """One line: ``"<output>: OK ..."`` or ``"<output>: FAILED ..."`` with defect counts."""
        counts = (
            f"{self.windows_expected} windows expected, {self.records} records, {self.late} late"
        )
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


def _check_late(
    result: Verification,
    output_name: OutputName,
    late: Sequence[Mapping[str, Any]],
    flights: list[Flight],
) -> set[FlightId]:
    agg = AGGREGATIONS[output_name]
    taken = {f.flight_id for f in flights if agg.accepts(f)}
    seen: Counter[FlightId] = Counter()
    for record in late:
        raw = record.get("flight_id")
        flight_id = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
        seen[flight_id] += 1
    for flight_id, n in seen.items():
        if flight_id not in taken:
            result.late_unknown.append(flight_id)
        if n > 1:
            result.late_duplicates.append(flight_id)
    return set(seen) & taken


def _final_values(
    result: Verification, committed: Sequence[Mapping[str, Any]]
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
        if order != list(range(len(order))):
            result.firing_gaps.append((window, order))
        finals[window] = firings[order[-1]]
    return finals


def verify(
    output_name: OutputName,
    committed: Sequence[Mapping[str, Any]],
    late: Sequence[Mapping[str, Any]],
    flights: Iterable[Flight],
) -> Verification:
    """Check one output of the streaming job against the batch reference.

    Steps:

    1. check the late records (each a distinct flight this output takes);
    2. compute the reference without the late flights;
    3. group committed records by window: detect duplicate firings and
       firings that are not ``0..n``; take the highest firing as final;
    4. compare windows (missing, unexpected) and final values (mismatched;
       floats within a relative 1e-9).

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
    excluded = _check_late(result, output_name, late, flights)
    want = expected(output_name, flights, excluded)
    result.windows_expected = len(want)
    finals = _final_values(result, committed)
    for window in sorted(want.keys() - finals.keys()):
        result.missing.append(window)
    for window in sorted(finals.keys() - want.keys()):
        result.unexpected.append(window)
    for window in sorted(want.keys() & finals.keys()):
        if not _values_equal(want[window], finals[window]):
            result.mismatched.append((window, want[window], dict(finals[window])))
    return result
