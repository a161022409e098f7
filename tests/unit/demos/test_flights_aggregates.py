"""The three aggregations: counting rules, purity, and order/merge-tree independence."""

from __future__ import annotations

import copy
import itertools
import pickle
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.demos.flights.aggregates import (
    AGGREGATIONS,
    Acc,
    Aggregation,
    aircraft_rotations_add,
    aircraft_rotations_create,
    aircraft_rotations_result,
    carrier_hourly_add,
    carrier_hourly_create,
    carrier_hourly_result,
    origin_3h_add,
    origin_3h_create,
    origin_3h_result,
)
from weirflow.demos.flights.parse import Flight
from weirflow.serde import TAG_MSGPACK, decode, encode

T0 = 1_357_035_300_000  # 2013-01-01T10:15Z
MINUTE_MS = 60_000


def flight(
    *,
    carrier: str = "UA",
    number: int = 1,
    tailnum: str | None = "N1",
    origin: str = "EWR",
    dest: str = "IAH",
    scheduled_ms: int = T0,
    delay: int | None = 0,
    arr_delay: int | None = 0,
    air_time: int | None = 100,
) -> Flight:
    return Flight(
        carrier=carrier,
        flight=number,
        tailnum=tailnum,
        origin=origin,
        dest=dest,
        scheduled_ms=scheduled_ms,
        event_ms=scheduled_ms + (delay or 0) * MINUTE_MS,
        dep_delay_min=delay,
        arr_delay_min=arr_delay,
        air_time_min=air_time,
        cancelled=delay is None,
    )


flights_strategy = st.builds(
    flight,
    carrier=st.sampled_from(["UA", "B6", "9E"]),
    number=st.integers(0, 5),
    tailnum=st.sampled_from([None, "N1", "N2"]),
    origin=st.sampled_from(["EWR", "JFK", "LGA"]),
    dest=st.sampled_from(["ATL", "BOS", "ORD"]),
    scheduled_ms=st.integers(0, 48).map(lambda q: T0 + q * 15 * MINUTE_MS),
    delay=st.none() | st.integers(-30, 600),
    arr_delay=st.none() | st.integers(-60, 600),
    air_time=st.none() | st.integers(20, 400),
)


def fold(agg: Aggregation, flights: list[Flight]) -> Acc:
    acc = agg.create()
    for f in flights:
        acc = agg.add(acc, f)
    return acc


def merge_randomly(agg: Aggregation, accs: list[Acc], rng: random.Random) -> Acc:
    """Merge accumulators pairwise in a random tree, each pair in a random order."""
    pool = list(accs) or [agg.create()]
    while len(pool) > 1:
        a = pool.pop(rng.randrange(len(pool)))
        b = pool.pop(rng.randrange(len(pool)))
        pool.append(agg.merge(a, b) if rng.random() < 0.5 else agg.merge(b, a))
    return pool[0]


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
@settings(max_examples=60, deadline=None)
@given(flights=st.lists(flights_strategy, max_size=25), seed=st.integers(0, 2**32 - 1))
def test_any_order_and_merge_tree_give_the_same_result(
    name: str, flights: list[Flight], seed: int
) -> None:
    agg = AGGREGATIONS[name]
    taken = [f for f in flights if agg.accepts(f)]
    want = agg.result(fold(agg, taken))

    rng = random.Random(seed)
    shuffled = list(taken)
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(len(shuffled) + 1), k=min(3, len(shuffled) + 1)))
    bounds = [0, *cuts, len(shuffled)]
    chunks = [shuffled[a:b] for a, b in itertools.pairwise(bounds)]
    partials = [fold(agg, chunk) for chunk in chunks]
    assert agg.result(merge_randomly(agg, partials, rng)) == want


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
@settings(max_examples=40, deadline=None)
@given(flights=st.lists(flights_strategy, min_size=1, max_size=10))
def test_add_and_merge_do_not_mutate_and_create_is_the_identity(
    name: str, flights: list[Flight]
) -> None:
    agg = AGGREGATIONS[name]
    taken = [f for f in flights if agg.accepts(f)]
    acc = fold(agg, taken)
    frozen = copy.deepcopy(acc)
    other = fold(agg, taken[:2])
    other_frozen = copy.deepcopy(other)
    for f in taken:
        agg.add(acc, f)
    agg.merge(acc, other)
    assert acc == frozen
    assert other == other_frozen
    assert agg.merge(acc, agg.create()) == acc
    assert agg.merge(agg.create(), acc) == acc


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
@settings(max_examples=30, deadline=None)
@given(flights=st.lists(flights_strategy, max_size=10))
def test_accumulators_survive_a_checkpoint_round_trip(name: str, flights: list[Flight]) -> None:
    agg = AGGREGATIONS[name]
    taken = [f for f in flights if agg.accepts(f)]
    acc = fold(agg, taken[: len(taken) // 2])
    data = encode(acc)
    assert data[0] == TAG_MSGPACK
    restored = decode(data)
    rest = taken[len(taken) // 2 :]
    assert agg.result(fold_from(agg, restored, rest)) == agg.result(fold(agg, taken))


def fold_from(agg: Aggregation, acc: Acc, flights: list[Flight]) -> Acc:
    for f in flights:
        acc = agg.add(acc, f)
    return acc


# counting rules


def test_carrier_hourly_counts() -> None:
    flights = [
        flight(delay=-4),
        flight(delay=15),
        flight(delay=16),
        flight(delay=None),
        flight(delay=None),
    ]
    acc = carrier_hourly_create()
    for f in flights:
        acc = carrier_hourly_add(acc, f)
    assert carrier_hourly_result(acc) == {
        "departures": 3,
        "cancellations": 2,
        "mean_dep_delay_min": 9.0,
        "max_dep_delay_min": 16,
        "delayed_15": 1,
    }


def test_carrier_hourly_with_only_cancellations_has_no_mean() -> None:
    acc = carrier_hourly_add(carrier_hourly_create(), flight(delay=None))
    result = carrier_hourly_result(acc)
    assert result["mean_dep_delay_min"] is None
    assert result["max_dep_delay_min"] is None
    assert result["cancellations"] == 1


def test_origin_3h_share_and_filter() -> None:
    acc = origin_3h_create()
    for delay in (0, 20, 30, 15):
        acc = origin_3h_add(acc, flight(delay=delay))
    assert origin_3h_result(acc) == {"departures": 4, "delayed_15": 2, "delayed_share": 0.5}
    assert origin_3h_result(origin_3h_create())["delayed_share"] is None
    assert not AGGREGATIONS["origin_3h"].accepts(flight(delay=None))
    with pytest.raises(ValueError, match="departed"):
        origin_3h_add(acc, flight(delay=None))


def test_aircraft_rotations_first_and_last_and_na_legs() -> None:
    legs = [
        flight(origin="LGA", dest="BOS", scheduled_ms=T0 + 60 * MINUTE_MS, delay=0, air_time=40),
        flight(origin="JFK", dest="ORD", scheduled_ms=T0, delay=10, arr_delay=5),
        flight(origin="EWR", dest="ATL", scheduled_ms=T0 + 120 * MINUTE_MS, arr_delay=None),
        flight(
            origin="EWR", dest="MIA", scheduled_ms=T0 + 120 * MINUTE_MS, number=2, air_time=None
        ),
    ]
    acc = aircraft_rotations_create()
    for leg in legs:
        acc = aircraft_rotations_add(acc, leg)
    assert aircraft_rotations_result(acc) == {
        "legs": 4,
        "first_origin": "JFK",
        # Two legs leave at the same time; flight number 2 is the larger.
        "last_dest": "MIA",
        "air_time_min": 240,
        "air_time_na_legs": 1,
        "arr_delay_min": 5,
        "arr_delay_na_legs": 1,
    }


@pytest.mark.parametrize(
    "skipped", [flight(delay=None), flight(tailnum=None)], ids=["cancelled", "no-tailnum"]
)
def test_aircraft_rotations_filters(skipped: Flight) -> None:
    agg = AGGREGATIONS["aircraft_rotations"]
    assert not agg.accepts(skipped)
    with pytest.raises(ValueError, match="tailnum"):
        agg.add(agg.create(), skipped)


def test_keys() -> None:
    f = flight(carrier="B6", origin="JFK", tailnum="N7")
    keys: dict[str, Any] = {name: agg.key(f) for name, agg in AGGREGATIONS.items()}
    assert keys == {"carrier_hourly": "B6", "origin_3h": "JFK", "aircraft_rotations": "N7"}


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_aggregate_function_shape_and_pickling(name: str) -> None:
    agg = AGGREGATIONS[name]
    fn = pickle.loads(pickle.dumps(agg.as_aggregate_function()))
    legs = [flight(number=1, delay=20), flight(number=2, scheduled_ms=T0 + 3_600_000, delay=3)]
    acc = fn.add(legs[1], fn.add(legs[0], fn.create_accumulator()))
    other = fn.add(legs[0], fn.create_accumulator())
    assert fn.get_result(acc) == agg.result(fold(agg, legs))
    assert fn.get_result(fn.merge(other, fn.create_accumulator())) == agg.result(other)
