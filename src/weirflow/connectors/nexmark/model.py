"""The three Nexmark event types: Person, Auction and Bid.

Field names and meanings follow the Nexmark benchmark (nexmark/nexmark,
``nexmark-flink``; Apache Beam's ``sdks/java/testing/nexmark``). Times are
``int`` milliseconds since the epoch (event time). The classes are frozen
msgspec structs without garbage-collector tracking: cheap to build by the
million, hashable, and serialisable by :mod:`weirflow.serde` (pickle fallback).
"""

from __future__ import annotations

import msgspec


class Person(msgspec.Struct, frozen=True, gc=False):
    """A new user of the auction site.

    Attributes:
        id: person id (≥ 1000).
        name: ``"<first> <last>"``.
        email_address: ``"<word>@<word>.com"``.
        credit_card: four groups of four digits.
        city: a US city.
        state: a US state code (AZ, CA, ID, OR, WA, WY).
        date_time: event time in ms.
        extra: padding toward the average person size (200 bytes).
    """

    id: int
    name: str
    email_address: str
    credit_card: str
    city: str
    state: str
    date_time: int
    extra: str


class Auction(msgspec.Struct, frozen=True, gc=False):
    """An item put up for auction.

    Attributes:
        id: auction id (≥ 1000).
        item_name: item name (3 to 19 characters).
        description: description (3 to 99 characters).
        initial_bid: opening price in cents.
        reserve: least accepted price in cents (≥ ``initial_bid``).
        date_time: event time in ms (the auction's start).
        expires: end of the auction in ms (> ``date_time``).
        seller: the selling person's id.
        category: category id (10 to 14).
        extra: padding toward the average auction size (500 bytes).
    """

    id: int
    item_name: str
    description: str
    initial_bid: int
    reserve: int
    date_time: int
    expires: int
    seller: int
    category: int
    extra: str


class Bid(msgspec.Struct, frozen=True, gc=False):
    """A bid on an auction.

    Attributes:
        auction: the auction's id.
        bidder: the bidding person's id.
        price: bid in cents.
        channel: where the bid came from (``"Google"``, …, or ``"channel-<n>"``).
        url: the page the bid was placed on.
        date_time: event time in ms.
        extra: padding toward the average bid size (100 bytes).
    """

    auction: int
    bidder: int
    price: int
    channel: str
    url: str
    date_time: int
    extra: str


Event = Person | Auction | Bid
"""Any Nexmark event."""
