"""The three windowed aggregations of the flights demo, as pure functions over plain data.

Each output has a filter (:attr:`Aggregation.accepts`), a key, a window
definition and four functions:

* ``create() -> acc``: the empty accumulator;
* ``add(acc, flight) -> acc``: a new accumulator with one more flight;
* ``merge(a, b) -> acc``: a new accumulator holding the flights of both;
* ``result(acc) -> dict``: the window's output value.

Invariants (checked by the property tests): ``add`` and ``merge`` never
mutate their arguments; ``merge`` is commutative and associative with
``create()`` as identity, and ``add(acc, f) == merge(acc, add(create(), f))``,
so any arrival order and any merge tree (session merges, pre-aggregation,
restore) give the same result. Accumulators are dicts of ints, strings,
``None`` and lists, so they survive a msgpack round trip unchanged
(tuples would come back as lists, which is why none are used).

Counting rules, the same in the streaming job and in the batch reference:

* ``carrier_hourly`` takes every flight. A cancelled flight counts in
  ``cancellations`` (at its scheduled time) and in nothing else; delay
  figures are over departed flights only.
* ``origin_3h`` takes departed flights only: a cancelled flight is
  *filtered* (it is not a departure, and has no delay).
* ``aircraft_rotations`` takes departed flights with a ``tailnum``: a
  cancelled flight was not flown and a flight without ``tailnum`` has no
  aircraft to key by, so both are *filtered*. A leg whose ``air_time`` or
  ``arr_delay`` is ``NA`` (diverted) counts as a leg; the missing value is
  left out of the sum and counted in ``air_time_na_legs`` /
  ``arr_delay_na_legs``.
* "Delayed" means a departure delay strictly greater than
  :data:`DELAYED_THRESHOLD_MIN` minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from weirflow.demos.flights.parse import Flight

OutputName = Literal["carrier_hourly", "origin_3h", "aircraft_rotations"]
"""Names of the demo's three outputs."""

Acc = dict[str, Any]
"""An accumulator: a dict of plain values (ints, strings, ``None``, lists)."""

DELAYED_THRESHOLD_MIN: Final = 15
"""A departure is delayed when its delay is strictly greater than this many minutes."""

CARRIER_HOURLY_SIZE: Final = timedelta(hours=1)
"""``carrier_hourly``: tumbling window size."""

ORIGIN_3H_SIZE: Final = timedelta(hours=3)
"""``origin_3h``: sliding window size."""

ORIGIN_3H_SLIDE: Final = timedelta(hours=1)
"""``origin_3h``: sliding window slide."""

ROTATION_GAP: Final = timedelta(hours=6)
"""``aircraft_rotations``: session gap (a session ends after 6 h without a departure)."""


def _delayed(delay_min: int) -> int:
    return 1 if delay_min > DELAYED_THRESHOLD_MIN else 0


def _max_or_none(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# carrier_hourly


def carrier_hourly_create() -> Acc:
    """Empty ``carrier_hourly`` accumulator.

    Returns:
        ``{"departures": 0, "cancellations": 0, "dep_delay_sum_min": 0,
        "dep_delay_max_min": None, "delayed_15": 0}``.
    """
    return {
        "departures": 0,
        "cancellations": 0,
        "dep_delay_sum_min": 0,
        "dep_delay_max_min": None,
        "delayed_15": 0,
    }


def carrier_hourly_add(acc: Acc, flight: Flight) -> Acc:
    """Return ``acc`` with one more flight (cancelled or departed); ``acc`` is not changed.

    Args:
        acc: a ``carrier_hourly`` accumulator.
        flight: any parsed flight.

    Returns:
        A new accumulator.
    """
    out = dict(acc)
    if flight.dep_delay_min is None:
        out["cancellations"] += 1
        return out
    delay = flight.dep_delay_min
    out["departures"] += 1
    out["dep_delay_sum_min"] += delay
    out["dep_delay_max_min"] = _max_or_none(acc["dep_delay_max_min"], delay)
    out["delayed_15"] += _delayed(delay)
    return out


def carrier_hourly_merge(a: Acc, b: Acc) -> Acc:
    """Combine two ``carrier_hourly`` accumulators (commutative, associative).

    Args:
        a: accumulator.
        b: accumulator.

    Returns:
        A new accumulator holding the flights of both.
    """
    return {
        "departures": a["departures"] + b["departures"],
        "cancellations": a["cancellations"] + b["cancellations"],
        "dep_delay_sum_min": a["dep_delay_sum_min"] + b["dep_delay_sum_min"],
        "dep_delay_max_min": _max_or_none(a["dep_delay_max_min"], b["dep_delay_max_min"]),
        "delayed_15": a["delayed_15"] + b["delayed_15"],
    }


def carrier_hourly_result(acc: Acc) -> dict[str, Any]:
    """Output value of a ``carrier_hourly`` window.

    Args:
        acc: accumulator.

    Returns:
        ``departures`` (int), ``cancellations`` (int),
        ``mean_dep_delay_min`` (float, ``None`` without departures),
        ``max_dep_delay_min`` (int or ``None``), ``delayed_15`` (int:
        departures delayed more than 15 minutes).
    """
    departures = acc["departures"]
    return {
        "departures": departures,
        "cancellations": acc["cancellations"],
        "mean_dep_delay_min": acc["dep_delay_sum_min"] / departures if departures else None,
        "max_dep_delay_min": acc["dep_delay_max_min"],
        "delayed_15": acc["delayed_15"],
    }


# origin_3h


def origin_3h_create() -> Acc:
    """Empty ``origin_3h`` accumulator.

    Returns:
        ``{"departures": 0, "delayed_15": 0}``.
    """
    return {"departures": 0, "delayed_15": 0}


def origin_3h_add(acc: Acc, flight: Flight) -> Acc:
    """Return ``acc`` with one more departed flight; ``acc`` is not changed.

    Args:
        acc: an ``origin_3h`` accumulator.
        flight: a departed flight (:func:`origin_3h_accepts` is true).

    Returns:
        A new accumulator.

    Raises:
        ValueError: the flight is cancelled (the job filters those first).
    """
    if flight.dep_delay_min is None:
        raise ValueError("origin_3h takes departed flights only")
    return {
        "departures": acc["departures"] + 1,
        "delayed_15": acc["delayed_15"] + _delayed(flight.dep_delay_min),
    }


def origin_3h_merge(a: Acc, b: Acc) -> Acc:
    """Combine two ``origin_3h`` accumulators (commutative, associative).

    Args:
        a: accumulator.
        b: accumulator.

    Returns:
        A new accumulator holding the flights of both.
    """
    return {
        "departures": a["departures"] + b["departures"],
        "delayed_15": a["delayed_15"] + b["delayed_15"],
    }


def origin_3h_result(acc: Acc) -> dict[str, Any]:
    """Output value of an ``origin_3h`` window.

    Args:
        acc: accumulator.

    Returns:
        ``departures`` (int), ``delayed_15`` (int), ``delayed_share``
        (float in [0, 1], ``None`` without departures).
    """
    departures = acc["departures"]
    return {
        "departures": departures,
        "delayed_15": acc["delayed_15"],
        "delayed_share": acc["delayed_15"] / departures if departures else None,
    }


# aircraft_rotations


def _rotation_order(flight: Flight) -> list[Any]:
    # A total order on legs that does not depend on arrival order: event
    # time first, then the flight identity to break ties.
    return [flight.event_ms, flight.scheduled_ms, flight.carrier, flight.flight]


def _min_or_none(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max_list_or_none(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def aircraft_rotations_create() -> Acc:
    """Empty ``aircraft_rotations`` accumulator.

    ``first``/``last`` hold ``[event_ms, scheduled_ms, carrier, flight,
    airport]`` of the earliest leg (airport = its origin) and of the latest
    leg (airport = its destination), ``None`` while empty.

    Returns:
        ``{"legs": 0, "first": None, "last": None, "air_time_min": 0,
        "air_time_na_legs": 0, "arr_delay_min": 0, "arr_delay_na_legs": 0}``.
    """
    return {
        "legs": 0,
        "first": None,
        "last": None,
        "air_time_min": 0,
        "air_time_na_legs": 0,
        "arr_delay_min": 0,
        "arr_delay_na_legs": 0,
    }


def aircraft_rotations_add(acc: Acc, flight: Flight) -> Acc:
    """Return ``acc`` with one more leg; ``acc`` is not changed.

    Args:
        acc: an ``aircraft_rotations`` accumulator.
        flight: a departed flight with a ``tailnum``
            (:func:`aircraft_rotations_accepts` is true).

    Returns:
        A new accumulator.

    Raises:
        ValueError: the flight is cancelled or has no ``tailnum``.
    """
    if not aircraft_rotations_accepts(flight):
        raise ValueError("aircraft_rotations takes departed flights with a tailnum only")
    order = _rotation_order(flight)
    return {
        "legs": acc["legs"] + 1,
        "first": _min_or_none(acc["first"], [*order, flight.origin]),
        "last": _max_list_or_none(acc["last"], [*order, flight.dest]),
        "air_time_min": acc["air_time_min"] + (flight.air_time_min or 0),
        "air_time_na_legs": acc["air_time_na_legs"] + (flight.air_time_min is None),
        "arr_delay_min": acc["arr_delay_min"] + (flight.arr_delay_min or 0),
        "arr_delay_na_legs": acc["arr_delay_na_legs"] + (flight.arr_delay_min is None),
    }


def aircraft_rotations_merge(a: Acc, b: Acc) -> Acc:
    """Combine two ``aircraft_rotations`` accumulators (commutative, associative).

    Used both to combine partial results and when two sessions of one
    aircraft merge into one.

    Args:
        a: accumulator.
        b: accumulator.

    Returns:
        A new accumulator holding the legs of both.
    """
    return {
        "legs": a["legs"] + b["legs"],
        "first": _min_or_none(a["first"], b["first"]),
        "last": _max_list_or_none(a["last"], b["last"]),
        "air_time_min": a["air_time_min"] + b["air_time_min"],
        "air_time_na_legs": a["air_time_na_legs"] + b["air_time_na_legs"],
        "arr_delay_min": a["arr_delay_min"] + b["arr_delay_min"],
        "arr_delay_na_legs": a["arr_delay_na_legs"] + b["arr_delay_na_legs"],
    }


def aircraft_rotations_result(acc: Acc) -> dict[str, Any]:
    """Output value of an ``aircraft_rotations`` session.

    Args:
        acc: accumulator.

    Returns:
        ``legs`` (int), ``first_origin`` (str or ``None``: origin of the
        leg with the smallest ``(event_ms, scheduled_ms, carrier,
        flight)``), ``last_dest`` (destination of the leg with the largest),
        ``air_time_min`` and ``arr_delay_min`` (int sums over legs where the
        value is known), ``air_time_na_legs`` and ``arr_delay_na_legs``
        (legs where it is not).
    """
    return {
        "legs": acc["legs"],
        "first_origin": acc["first"][-1] if acc["first"] is not None else None,
        "last_dest": acc["last"][-1] if acc["last"] is not None else None,
        "air_time_min": acc["air_time_min"],
        "air_time_na_legs": acc["air_time_na_legs"],
        "arr_delay_min": acc["arr_delay_min"],
        "arr_delay_na_legs": acc["arr_delay_na_legs"],
    }


# filters and keys


def carrier_hourly_accepts(flight: Flight) -> bool:
    """``carrier_hourly`` takes every flight. Returns ``True``."""
    return True


def origin_3h_accepts(flight: Flight) -> bool:
    """``origin_3h`` takes departed flights. Returns ``False`` for a cancelled one."""
    return not flight.cancelled


def aircraft_rotations_accepts(flight: Flight) -> bool:
    """``aircraft_rotations`` takes departed flights with a ``tailnum``.

    Returns:
        ``False`` for a cancelled flight or one whose ``tailnum`` is ``None``.
    """
    return not flight.cancelled and flight.tailnum is not None


@dataclass(frozen=True, slots=True)
class Aggregation:
    """Everything the job and the reference need to know about one output.

    Attributes:
        name: output name.
        accepts: filter; a flight for which it is ``False`` is *filtered*
            (counted, not aggregated).
        key: key of an accepted flight (carrier, origin or tailnum).
        create: empty accumulator.
        add: accumulator plus one accepted flight (pure).
        merge: two accumulators combined (pure, commutative, associative).
        result: accumulator to output value.
    """

    name: OutputName
    accepts: Callable[[Flight], bool]
    key: Callable[[Flight], str]
    create: Callable[[], Acc]
    add: Callable[[Acc, Flight], Acc]
    merge: Callable[[Acc, Acc], Acc]
    result: Callable[[Acc], dict[str, Any]]

    def as_aggregate_function(self) -> AggregateFunctionAdapter:
        """This aggregation in the shape of Flink's ``AggregateFunction``.

        Returns:
            An object with ``create_accumulator()``, ``add(value, acc)``,
            ``merge(a, b)`` and ``get_result(acc)``, which a window's
            ``aggregate()`` takes.
        """
        return AggregateFunctionAdapter(self)


@dataclass(frozen=True, slots=True)
class AggregateFunctionAdapter:
    """An :class:`Aggregation` with Flink's ``AggregateFunction`` method names and argument order.

    Picklable (it holds module-level functions only), so it can be copied
    to subtasks in other processes.

    Attributes:
        aggregation: the wrapped aggregation.
    """

    aggregation: Aggregation

    def create_accumulator(self) -> Acc:
        """Empty accumulator. Returns ``aggregation.create()``."""
        return self.aggregation.create()

    def add(self, value: Flight, accumulator: Acc) -> Acc:
        """Accumulator plus one flight (value first, as in Flink). Returns a new accumulator."""
        return self.aggregation.add(accumulator, value)

    def merge(self, a: Acc, b: Acc) -> Acc:
        """Two accumulators combined. Returns a new accumulator."""
        return self.aggregation.merge(a, b)

    def get_result(self, accumulator: Acc) -> dict[str, Any]:
        """The window's output value. Returns ``aggregation.result(accumulator)``."""
        return self.aggregation.result(accumulator)


def _carrier(flight: Flight) -> str:
    return flight.carrier


def _origin(flight: Flight) -> str:
    return flight.origin


def _tailnum(flight: Flight) -> str:
    if flight.tailnum is None:
        raise ValueError("flight has no tailnum")
    return flight.tailnum


AGGREGATIONS: Final[dict[OutputName, Aggregation]] = {
    "carrier_hourly": Aggregation(
        "carrier_hourly",
        carrier_hourly_accepts,
        _carrier,
        carrier_hourly_create,
        carrier_hourly_add,
        carrier_hourly_merge,
        carrier_hourly_result,
    ),
    "origin_3h": Aggregation(
        "origin_3h",
        origin_3h_accepts,
        _origin,
        origin_3h_create,
        origin_3h_add,
        origin_3h_merge,
        origin_3h_result,
    ),
    "aircraft_rotations": Aggregation(
        "aircraft_rotations",
        aircraft_rotations_accepts,
        _tailnum,
        aircraft_rotations_create,
        aircraft_rotations_add,
        aircraft_rotations_merge,
        aircraft_rotations_result,
    ),
}
"""The three outputs by name."""
