"""The Nexmark generator: event kinds, ids, timestamps and fields follow the benchmark's rules."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.connectors.nexmark import Auction, Bid, NexmarkConfig, NexmarkGenerator, Person
from weirflow.connectors.nexmark.generator import (
    BEAM_BASE_TIME_MS,
    US_STATES,
    last_auction,
    last_person,
)
from weirflow.errors import ConfigError

N = 20_000


@pytest.fixture(scope="module")
def events() -> list[Person | Auction | Bid]:
    return NexmarkGenerator().events(0, 1, N)


def test_kind_follows_the_event_id_modulo_50(events: list[object]) -> None:
    for n, e in enumerate(events):
        rem = n % 50
        expected = Person if rem < 1 else Auction if rem < 4 else Bid
        assert type(e) is expected, n


def test_proportions_are_2_6_92_percent(events: list[object]) -> None:
    kinds = [type(e) for e in events]
    assert kinds.count(Person) == N * 2 // 100
    assert kinds.count(Auction) == N * 6 // 100
    assert kinds.count(Bid) == N * 92 // 100


def test_timestamps_follow_the_first_event_rate(events: list[Person | Auction | Bid]) -> None:
    assert [e.date_time for e in events] == [BEAM_BASE_TIME_MS + n // 10 for n in range(N)]
    g = NexmarkGenerator(NexmarkConfig(first_event_rate=1000, base_time_ms=5))
    assert [g.event(n).date_time for n in (0, 1, 999, 1000)] == [5, 6, 1004, 1005]


def test_person_and_auction_ids_are_dense_from_1000(events: list[object]) -> None:
    persons = [e.id for e in events if type(e) is Person]
    auctions = [e.id for e in events if type(e) is Auction]
    assert persons == list(range(1000, 1000 + len(persons)))
    assert auctions == list(range(1000, 1000 + len(auctions)))


def test_last_ids_match_the_formulas() -> None:
    assert [last_person(i) for i in (0, 1, 49, 50, 99, 100)] == [0, 0, 0, 1, 1, 2]
    # event 1, 2, 3 create auctions 0, 1, 2; bids see the last one created
    assert [last_auction(i) for i in (1, 2, 3, 4, 49, 50, 51, 54)] == [0, 1, 2, 2, 2, 2, 3, 5]


def test_bids_and_auctions_refer_to_people_and_auctions_that_exist_or_come_soon(
    events: list[object],
) -> None:
    for n, e in enumerate(events):
        if type(e) is Bid:
            assert 1000 <= e.auction <= 1000 + last_auction(n) + 10
            assert 1000 <= e.bidder <= 1000 + last_person(n) + 10
        elif type(e) is Auction:
            assert 1000 <= e.seller <= 1000 + last_person(n) + 10


def test_hot_items_dominate_as_the_ratios_say(events: list[object]) -> None:
    bids = [(n, e) for n, e in enumerate(events) if type(e) is Bid]
    hot_auction = sum(e.auction == 1000 + last_auction(n) // 100 * 100 for n, e in bids)
    hot_bidder = sum(e.bidder == 1000 + last_person(n) // 100 * 100 + 1 for n, e in bids)
    assert 0.45 < hot_auction / len(bids) < 0.60  # 1/2 plus cold picks that land on it
    assert 0.70 < hot_bidder / len(bids) < 0.80  # 3/4


def test_auction_fields_are_consistent(events: list[object]) -> None:
    for e in events:
        if type(e) is Auction:
            assert 10 <= e.category <= 14
            assert e.reserve >= e.initial_bid >= 100
            assert e.expires > e.date_time
            assert 3 <= len(e.item_name) < 20 and 3 <= len(e.description) < 100


def test_prices_are_log_uniform_between_1_and_1m_dollars(events: list[object]) -> None:
    prices = [e.price for e in events if type(e) is Bid]
    assert min(prices) >= 100 and max(prices) <= 100_000_000
    below_100_dollars = sum(p < 10_000 for p in prices) / len(prices)
    assert 0.28 < below_100_dollars < 0.39  # 2 decades of 6


def test_persons_have_valid_fields(events: list[object]) -> None:
    for e in events:
        if type(e) is Person:
            assert e.state in US_STATES
            assert e.email_address.endswith(".com") and "@" in e.email_address
            groups = e.credit_card.split(" ")
            assert len(groups) == 4 and all(len(g) == 4 and g.isdigit() for g in groups)


def _estimated_size(e: Person | Auction | Bid) -> int:
    """The benchmark's size accounting: 8 bytes per number field, strings by length."""
    if type(e) is Person:
        strings = (e.name, e.email_address, e.credit_card, e.city, e.state, e.extra)
        return 8 + sum(map(len, strings))
    if type(e) is Auction:
        return 8 + len(e.item_name) + len(e.description) + 40 + len(e.extra)
    return 32 + len(e.extra)


@pytest.mark.parametrize(("kind", "average"), [(Person, 200), (Auction, 500), (Bid, 100)])
def test_padding_brings_sizes_to_the_averages(
    events: list[Person | Auction | Bid], kind: type, average: int
) -> None:
    mean = statistics.mean(_estimated_size(e) for e in events if type(e) is kind)
    assert average * 0.97 < mean < average * 1.03


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_an_event_is_a_pure_function_of_its_number(n: int) -> None:
    assert NexmarkGenerator().event(n) == NexmarkGenerator().event(n)


def test_different_events_differ(events: list[object]) -> None:
    bids = [e for e in events if type(e) is Bid]
    assert len({(b.price, b.extra) for b in bids}) > 0.99 * len(bids)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=64), st.integers(min_value=0, max_value=10**6))
def test_out_of_order_groups_permute_ids_within_each_group(group: int, first_group: int) -> None:
    g = NexmarkGenerator(NexmarkConfig(out_of_order_group_size=group))
    start = first_group * group
    ids = [g.event_id(n) for n in range(start, start + group)]
    assert sorted(ids) == list(range(start, start + group))


def test_out_of_order_groups_keep_timestamps_in_number_order() -> None:
    g = NexmarkGenerator(NexmarkConfig(out_of_order_group_size=10, first_event_rate=1000))
    assert [g.event(n).date_time - g.config.base_time_ms for n in range(12)] == list(range(12))
    kinds = [type(g.event(n)) for n in range(50)]
    expected = [
        Person if g.event_id(n) % 50 < 1 else Auction if g.event_id(n) % 50 < 4 else Bid
        for n in range(50)
    ]
    assert kinds == expected
    assert kinds[:4] != [Person, Auction, Auction, Auction]


def test_negative_event_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="start at 0"):
        NexmarkGenerator().event(-1)


@pytest.mark.parametrize(
    "field", ["first_event_rate", "out_of_order_group_size", "avg_bid_bytes", "hot_seller_ratio"]
)
def test_config_refuses_values_below_one(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        NexmarkConfig(**{field: 0})
