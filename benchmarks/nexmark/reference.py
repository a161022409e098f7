"""Plain batch computations of the Nexmark queries, to check the streaming ones.

Each function takes the full list of events (in event-number order) and
returns the query's final answer as a sorted list of tuples; :func:`final`
reduces a streaming query's output to the same shape (for q4, the last
update per category).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
from queries import DOLLAR_TO_EURO, Q2_MODULUS, Q3_CATEGORY, Q3_STATES, Q5_SLIDE_MS, WINDOW_MS

from weirflow.connectors.nexmark import Auction, Bid, Event, Person


def _bids(events: list[Event]) -> list[Bid]:
    return [e for e in events if type(e) is Bid]


def q0(events: list[Event]) -> list[Any]:
    """Every bid, as a tuple of its fields."""
    return sorted(msgspec.structs.astuple(b) for b in _bids(events))


def q1(events: list[Event]) -> list[Any]:
    """``(auction, bidder, price × 0.908, date_time)`` per bid."""
    rows = ((b.auction, b.bidder, DOLLAR_TO_EURO * b.price, b.date_time) for b in _bids(events))
    return sorted(rows)


def q2(events: list[Event]) -> list[Any]:
    """``(auction, price)`` of bids on auctions whose id is a multiple of 123."""
    return sorted((b.auction, b.price) for b in _bids(events) if b.auction % Q2_MODULUS == 0)


def q3(events: list[Event]) -> list[Any]:
    """``(name, city, state, auction id)`` for category-10 auctions of OR/ID/CA sellers."""
    persons = {e.id: e for e in events if type(e) is Person and e.state in Q3_STATES}
    return sorted(
        (p.name, p.city, p.state, a.id)
        for a in events
        if type(a) is Auction and a.category == Q3_CATEGORY and (p := persons.get(a.seller))
    )


def q4(events: list[Event]) -> list[Any]:
    """``(category, total, count)`` of winning prices (highest valid bid ≥ reserve per auction)."""
    auctions = {e.id: e for e in events if type(e) is Auction}
    best: dict[int, int] = {}
    for b in _bids(events):
        a = auctions.get(b.auction)
        if a is None or not a.date_time <= b.date_time <= a.expires or b.price < a.reserve:
            continue
        if b.price > best.get(a.id, -1):
            best[a.id] = b.price
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for auction_id, price in best.items():
        s = sums[auctions[auction_id].category]
        s[0] += price
        s[1] += 1
    return sorted((c, t, n) for c, (t, n) in sums.items())


def q5(events: list[Event]) -> list[Any]:
    """``(window start, auction, count)`` of each sliding window's most-bid auctions."""
    counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for b in _bids(events):
        last = b.date_time - b.date_time % Q5_SLIDE_MS
        for start in range(last, b.date_time - WINDOW_MS, -Q5_SLIDE_MS):
            counts[start][b.auction] += 1
    out = []
    for start, per_auction in counts.items():
        top = max(per_auction.values())
        out += [(start, a, n) for a, n in per_auction.items() if n == top]
    return sorted(out)


def q7(events: list[Event]) -> list[Any]:
    """``(window start, auction, bidder, price, date_time)`` of each tumbling window's top bids."""
    top: dict[int, int] = {}
    bids = _bids(events)
    for b in bids:
        start = b.date_time - b.date_time % WINDOW_MS
        top[start] = max(top.get(start, -1), b.price)
    return sorted(
        (s, b.auction, b.bidder, b.price, b.date_time)
        for b in bids
        if b.price == top[s := b.date_time - b.date_time % WINDOW_MS]
    )


def q8(events: list[Event]) -> list[Any]:
    """``(person id, name, window start)`` for persons who sold in their creation window."""
    sellers = {
        (e.seller, e.date_time - e.date_time % WINDOW_MS) for e in events if type(e) is Auction
    }
    return sorted(
        (p.id, p.name, start)
        for p in events
        if type(p) is Person and (p.id, start := p.date_time - p.date_time % WINDOW_MS) in sellers
    )


def q11(events: list[Event]) -> list[Any]:
    """``(bidder, count, start, end)`` of 10 s-gap sessions (touching sessions merge)."""
    times: dict[int, list[int]] = defaultdict(list)
    for b in _bids(events):
        times[b.bidder].append(b.date_time)
    out = []
    for bidder, ts in times.items():
        ts.sort()
        start = last = ts[0]
        count = 0
        for t in ts:
            if t > last + WINDOW_MS:
                out.append((bidder, count, start, last + WINDOW_MS))
                start, count = t, 0
            count += 1
            last = t
        out.append((bidder, count, start, last + WINDOW_MS))
    return sorted(out)


REFERENCES: dict[str, Callable[[list[Event]], list[Any]]] = {
    "q0": q0,
    "q1": q1,
    "q2": q2,
    "q3": q3,
    "q4": q4,
    "q5": q5,
    "q7": q7,
    "q8": q8,
    "q11": q11,
}
"""Query name → batch computation."""


def final(query: str, results: list[Any]) -> list[Any]:
    """Reduce a streaming query's output to the batch answer's shape (sorted tuples).

    Args:
        query: the query name.
        results: what the query's sink collected.

    Returns:
        Sorted tuples; for q4 the last ``(category, total, count)`` per
        category, for q0 the bids as tuples.
    """
    if query == "q0":
        return sorted(msgspec.structs.astuple(b) for b in results)
    if query == "q4":
        last: dict[int, tuple[int, int, int]] = {}
        for category, _avg, total, count in results:
            if count > last.get(category, (0, 0, 0))[2]:
                last[category] = (category, total, count)
        return sorted(last.values())
    return sorted(results)
