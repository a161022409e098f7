"""Nexmark queries q0, q1, q2, q3, q4, q5, q7, q8 and q11 on weirflow's public API.

Each query is a function ``Stream of events -> Stream of results``; the
source stream carries Person, Auction and Bid records with event time and
watermarks (``date_time - 4 s``, as Flink's Nexmark DDL). The query
semantics follow the Nexmark benchmark (nexmark/nexmark ``queries/q*.sql``;
q4's winning bid follows Beam's ``WinningBids``), summarised in
``../shared/NEXMARK.md``.

weirflow has no two-input join operator, so the joins (q3, q4, q8) are
written as Flink DataStream users write them: the inputs are united into one
stream, keyed by the join key, and a :class:`~weirflow.KeyedProcessFunction`
keeps each side in keyed state (with event-time timers where a window or an
auction's expiry closes the join). Records are told apart by their type.
Outputs are plain tuples; :mod:`reference` computes the same tuples in batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from weirflow import KeyedProcessFunction, WindowResult
from weirflow.api.stream import Stream
from weirflow.connectors.nexmark import Auction, Bid, Person
from weirflow.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from weirflow.windows import SessionWindows, SlidingWindows

WINDOW_MS = 10_000
Q5_SLIDE_MS = 2_000
Q3_STATES = frozenset({"OR", "ID", "CA"})
Q3_CATEGORY = 10
Q2_MODULUS = 123
DOLLAR_TO_EURO = 0.908


def _bids(events: Stream, query: str) -> Stream:
    # named per query, so that several queries can read one source in one dataflow
    return events.filter(lambda e: type(e) is Bid, name=f"{query}_bids")


def q0(events: Stream) -> Stream:
    """Pass-through: every bid, unchanged (measures the source and the runtime alone)."""
    return _bids(events, "q0").map(lambda b: b, name="q0")


def q1(events: Stream) -> Stream:
    """Currency conversion: ``(auction, bidder, price × 0.908, date_time)`` per bid."""
    return _bids(events, "q1").map(
        lambda b: (b.auction, b.bidder, DOLLAR_TO_EURO * b.price, b.date_time), name="q1"
    )


def q2(events: Stream) -> Stream:
    """Selection: ``(auction, price)`` of the bids on auctions whose id is a multiple of 123."""
    return (
        _bids(events, "q2")
        .filter(lambda b: b.auction % Q2_MODULUS == 0, name="q2_filter")
        .map(lambda b: (b.auction, b.price), name="q2")
    )


class SellerJoin(KeyedProcessFunction[Any, Any]):
    """q3's incremental join of persons and auctions on ``person.id = auction.seller``.

    Keyed by the person id. State: the person (once seen) and the auctions
    that arrived before their seller. Emits ``(name, city, state, auction id)``
    for every pair as soon as both sides are there, as an unbounded SQL join does.
    """

    def open(self, ctx: Any) -> None:
        """Declare the person and pending-auctions state."""
        self.person = ctx.get_state(ValueStateDescriptor("person"))
        self.auctions = ctx.get_state(ListStateDescriptor("auctions"))

    def process_element(self, value: Any, ctx: Any) -> Iterator[tuple[str, str, str, int]]:
        """Join ``value`` (a Person or an Auction) with the other side seen so far."""
        if type(value) is Person:
            self.person.update(value)
            for auction_id in self.auctions.get():
                yield (value.name, value.city, value.state, auction_id)
            self.auctions.clear()
            return
        person = self.person.value()
        if person is None:
            self.auctions.add(value.id)
        else:
            yield (person.name, person.city, person.state, value.id)


def q3(events: Stream) -> Stream:
    """Local item suggestion: auctions of category 10 by sellers from OR, ID or CA.

    Returns:
        A stream of ``(name, city, state, auction id)``.
    """
    persons = events.filter(lambda e: type(e) is Person and e.state in Q3_STATES, name="q3_persons")
    auctions = events.filter(
        lambda e: type(e) is Auction and e.category == Q3_CATEGORY, name="q3_auctions"
    )
    return (
        persons.union(auctions, name="q3_union")
        .key_by(lambda e: e.id if type(e) is Person else e.seller)
        .process(SellerJoin(), name="q3")
    )


class WinningBid(KeyedProcessFunction[Any, Any]):
    """q4's first stage: the winning bid of each auction (Beam's ``WinningBids``).

    Keyed by auction id. A bid wins when it lies within ``[date_time,
    expires]`` of its auction, reaches the reserve, and has the highest price
    (the earliest on ties). Bids that arrive before their auction wait in
    state; an event-time timer at each such bid's time drops them if the
    auction has not come by then (an auction never starts after a valid bid
    on it). At the auction's expiry a timer emits ``(category, price)`` of the
    winner, if any, and clears the auction's state.
    """

    def open(self, ctx: Any) -> None:
        """Declare the auction, best-bid and early-bids state."""
        self.auction = ctx.get_state(ValueStateDescriptor("auction"))
        self.best = ctx.get_state(ValueStateDescriptor("best"))
        self.early = ctx.get_state(ListStateDescriptor("early"))

    def _offer(self, auction: Auction, price: int, date_time: int) -> None:
        if not auction.date_time <= date_time <= auction.expires or price < auction.reserve:
            return
        best = self.best.value()
        if best is None or price > best[0] or (price == best[0] and date_time < best[1]):
            self.best.update((price, date_time))

    def process_element(self, value: Any, ctx: Any) -> None:
        """Keep an auction (and settle its early bids) or offer a bid to its auction."""
        if type(value) is Auction:
            self.auction.update(value)
            for price, date_time in self.early.get():
                self._offer(value, price, date_time)
            self.early.clear()
            ctx.register_event_time_timer(value.expires)
            return
        auction = self.auction.value()
        if auction is not None:
            self._offer(auction, value.price, value.date_time)
        elif value.date_time > ctx.current_watermark():
            self.early.add((value.price, value.date_time))
            ctx.register_event_time_timer(value.date_time)

    def on_timer(self, timestamp_ms: int, ctx: Any) -> Iterator[tuple[int, int]]:
        """Close an expired auction (emit its winner), or drop early bids of an absent auction."""
        auction = self.auction.value()
        if auction is None:
            kept = [b for b in self.early.get() if b[1] > timestamp_ms]
            self.early.update(kept)
            return
        if timestamp_ms < auction.expires:
            return
        best = self.best.value()
        if best is not None:
            yield (auction.category, best[0])
        self.auction.clear()
        self.best.clear()


class CategoryAverage(KeyedProcessFunction[Any, Any]):
    """q4's second stage: the running average winning price of each category.

    Emits ``(category, average, total, count)`` after every winning bid;
    the last record of a category holds the final figures.
    """

    def open(self, ctx: Any) -> None:
        """Declare the ``(total, count)`` state."""
        self.sums = ctx.get_state(ValueStateDescriptor("sums", (0, 0)))

    def process_element(self, value: Any, ctx: Any) -> list[tuple[int, float, int, int]]:
        """Fold one ``(category, price)`` into the category's average."""
        total, count = self.sums.value()
        total += value[1]
        count += 1
        self.sums.update((total, count))
        return [(value[0], total / count, total, count)]


def q4(events: Stream) -> Stream:
    """Average winning price per category (auction ⋈ bid, then a keyed average).

    Returns:
        A stream of ``(category, average, total, count)`` updates.
    """
    auctions_and_bids = events.filter(lambda e: type(e) is not Person, name="q4_auctions_bids")
    return (
        auctions_and_bids.key_by(lambda e: e.id if type(e) is Auction else e.auction)
        .process(WinningBid(), name="q4_winners")
        .key_by(lambda w: w[0])
        .process(CategoryAverage(), name="q4")
    )


class WindowArgMax(KeyedProcessFunction[Any, Any]):
    """Keeps, per window (the key is the window start), the items with the highest score.

    Emits ``(window start, *item)`` for each item whose score equals the
    window's maximum, when the watermark passes the window's last millisecond.

    Args:
        size_ms: the window length in ms.
        score: ``record -> int``, the quantity maximised.
        item: ``record -> tuple``, what is emitted for a winner.
    """

    def __init__(
        self,
        size_ms: int,
        score: Callable[[Any], int],
        item: Callable[[Any], tuple[Any, ...]],
    ) -> None:
        self.size_ms = size_ms
        self.score = score
        self.item = item

    def open(self, ctx: Any) -> None:
        """Declare the ``(best score, winners)`` state."""
        self.best = ctx.get_state(ValueStateDescriptor("best"))

    def process_element(self, value: Any, ctx: Any) -> None:
        """Offer one record to its window's maximum."""
        s = self.score(value)
        best = self.best.value()
        if best is None:
            self.best.update((s, (self.item(value),)))
            ctx.register_event_time_timer(ctx.current_key + self.size_ms - 1)
        elif s > best[0]:
            self.best.update((s, (self.item(value),)))
        elif s == best[0]:
            self.best.update((s, (*best[1], self.item(value))))

    def on_timer(self, timestamp_ms: int, ctx: Any) -> list[tuple[Any, ...]]:
        """Emit the window's winners and forget it."""
        best = self.best.value()
        self.best.clear()
        start = ctx.current_key
        return [(start, *item) for item in best[1]] if best is not None else []


def q5(events: Stream) -> Stream:
    """Hot items: per 10 s window sliding by 2 s, the auctions with the most bids.

    Returns:
        A stream of ``(window start, auction, bid count)``.
    """
    counts = (
        _bids(events, "q5")
        .key_by(lambda b: b.auction)
        .window(SlidingWindows(size=timedelta(milliseconds=WINDOW_MS), slide=timedelta(seconds=2)))
        .count(name="q5_counts")
    )
    return counts.key_by(lambda r: r.start_ms).process(
        WindowArgMax(WINDOW_MS, lambda r: r.value, lambda r: (r.key, r.value)), name="q5"
    )


def q7(events: Stream) -> Stream:
    """Highest bid: per 10 s tumbling window, the bids with the window's highest price.

    Returns:
        A stream of ``(window start, auction, bidder, price, date_time)``.
    """
    return (
        _bids(events, "q7")
        .key_by(lambda b: b.date_time - b.date_time % WINDOW_MS)
        .process(
            WindowArgMax(
                WINDOW_MS, lambda b: b.price, lambda b: (b.auction, b.bidder, b.price, b.date_time)
            ),
            name="q7",
        )
    )


class NewUsers(KeyedProcessFunction[Any, Any]):
    """q8's windowed join: a person and an auction they sell in the same 10 s tumbling window.

    Keyed by person id (the auction's seller). State: per window start, the
    person's name (when the person was created in that window) and whether
    an auction of theirs started in it. A timer at the window's end emits
    ``(id, name, window start)`` when both happened, then forgets the window.
    """

    def open(self, ctx: Any) -> None:
        """Declare the per-window state."""
        self.windows = ctx.get_state(MapStateDescriptor("windows"))

    def process_element(self, value: Any, ctx: Any) -> None:
        """Record a person's creation or an auction's start in its window."""
        start = value.date_time - value.date_time % WINDOW_MS
        name, seen_auction = self.windows.get(start, (None, False))
        if type(value) is Person:
            name = value.name
        else:
            seen_auction = True
        if not self.windows.contains(start):
            ctx.register_event_time_timer(start + WINDOW_MS - 1)
        self.windows.put(start, (name, seen_auction))

    def on_timer(self, timestamp_ms: int, ctx: Any) -> list[tuple[int, str, int]]:
        """Close the window ending at ``timestamp_ms + 1``."""
        start = timestamp_ms + 1 - WINDOW_MS
        name, seen_auction = self.windows.get(start, (None, False))
        self.windows.remove(start)
        if name is not None and seen_auction:
            return [(ctx.current_key, name, start)]
        return []


def q8(events: Stream) -> Stream:
    """Monitor new users: persons who opened an auction in the 10 s window they were created in.

    Returns:
        A stream of ``(person id, name, window start)``.
    """
    persons_and_auctions = events.filter(lambda e: type(e) is not Bid, name="q8_persons_auctions")
    return persons_and_auctions.key_by(lambda e: e.id if type(e) is Person else e.seller).process(
        NewUsers(), name="q8"
    )


def _session_row(r: WindowResult) -> tuple[int, int, int, int]:
    return (r.key, r.value, r.start_ms, r.end_ms)


def q11(events: Stream) -> Stream:
    """User sessions: bids per bidder in session windows with a 10 s gap.

    Returns:
        A stream of ``(bidder, bid count, session start, session end)``.
    """
    return (
        _bids(events, "q11")
        .key_by(lambda b: b.bidder)
        .window(SessionWindows(gap=timedelta(milliseconds=WINDOW_MS)))
        .count(name="q11_sessions")
        .map(_session_row, name="q11")
    )


QUERIES: dict[str, Callable[[Stream], Stream]] = {
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
"""Query name → builder."""
