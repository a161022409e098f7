"""Deterministic generation of Nexmark events by event number.

The rules (event kinds by id, timestamps, id choice, hot sellers, bidders and
auctions, price distribution, auction lengths, padding toward average sizes)
are those of the Nexmark benchmark's generator (nexmark/nexmark
``nexmark-flink/.../generator``, itself Apache Beam's
``sdks/java/testing/nexmark`` generator); ``docs/workloads.md`` sums them up.

Randomness: Beam seeds one ``java.util.Random`` per event id so that an
event depends on its id alone. Seeding a Mersenne Twister costs about 6 µs
in CPython, more than the rest of the event, so here each event draws its
random words from SplitMix64 (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014) keyed by the event id: the same
property (an event is a pure function of its id, whatever the split or batch
that produces it) at a fraction of the cost. Strings are slices, at random
offsets and lengths, of two fixed pools of seeded random letters (one with
spaces at probability 1/13, as the generator's ``nextString``, one without, as
its ``nextExactString``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from weirflow.connectors.nexmark.model import Auction, Bid, Event, Person
from weirflow.errors import ConfigError

PERSON_PROPORTION = 1
AUCTION_PROPORTION = 3
PROPORTION_DENOMINATOR = 50
FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
NUM_CATEGORIES = 5
PERSON_ID_LEAD = 10
AUCTION_ID_LEAD = 10
HOT_SELLER_RATIO = 100
HOT_AUCTION_RATIO = 100
HOT_BIDDER_RATIO = 100
BEAM_BASE_TIME_MS = 1_436_918_400_000
"""2015-07-15T00:00:00Z, the base time of Beam's Nexmark batch runs."""

US_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
US_CITIES = (
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
)
FIRST_NAMES = (
    "Peter",
    "Paul",
    "Luke",
    "John",
    "Saul",
    "Vicky",
    "Kate",
    "Julie",
    "Sarah",
    "Deiter",
    "Walter",
)
LAST_NAMES = (
    "Shultz",
    "Abrams",
    "Spencer",
    "White",
    "Bartels",
    "Walton",
    "Smith",
    "Jones",
    "Noris",
)
HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
HOT_URLS = tuple(f"https://www.nexmark.com/{c.lower()}/item.htm?query=1" for c in HOT_CHANNELS)
CHANNELS = 10_000

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_SEED_SPREAD = 0xD1B54A32D192ED03
_TWO_POW_MINUS_53 = 2.0**-53
_POOL_SIZE = 1 << 16
_STRING_ROOM = _POOL_SIZE - 1024


def _pool(seed: int, with_spaces: bool) -> str:
    # Byte b maps to a letter (b mod 26); in the spaced pool bytes < 20 map to
    # a space, a probability of 20/256 ≈ 1/12.8 (the generator's 1/13).
    table = bytes(
        32 if with_spaces and b < 20 else 97 + (b - (20 if with_spaces else 0)) % 26
        for b in range(256)
    )
    return random.Random(seed).randbytes(_POOL_SIZE).translate(table).decode("ascii")


_SPACED = _pool(0x4E45584D, with_spaces=True)
_LETTERS = _pool(0x41524B, with_spaces=False)


@dataclass(frozen=True)
class NexmarkConfig:
    """Parameters of the Nexmark generator (the benchmark's defaults).

    Attributes:
        first_event_rate: event-time rate in events per second: event ``n``
            has time ``base_time_ms + n * 1000 // first_event_rate``. It sets
            event time only; how fast events are produced in wall time is the
            source's ``rate``.
        base_time_ms: event time of event 0, ms since the epoch.
        out_of_order_group_size: ``G``; event ids are permuted within groups
            of ``G`` numbers (``(n // G) * G + (n * 953) % G``) while
            timestamps follow ``n``, so ``G > 1`` makes event time out of order.
        avg_person_bytes: average Person size the padding aims at.
        avg_auction_bytes: average Auction size the padding aims at.
        avg_bid_bytes: average Bid size the padding aims at.
        hot_seller_ratio: an auction has a hot seller unless a draw in
            ``[0, ratio)`` is 0 (default 4: probability 3/4).
        hot_auction_ratio: likewise for a bid's auction (default 2: 1/2).
        hot_bidder_ratio: likewise for a bid's bidder (default 4: 3/4).
        num_active_people: people a new auction or bid picks from.
        num_in_flight_auctions: auctions a bid picks from; also sets auction lengths.

    Raises:
        ConfigError: a rate, size, ratio or count below 1.
    """

    first_event_rate: int = 10_000
    base_time_ms: int = BEAM_BASE_TIME_MS
    out_of_order_group_size: int = 1
    avg_person_bytes: int = 200
    avg_auction_bytes: int = 500
    avg_bid_bytes: int = 100
    hot_seller_ratio: int = 4
    hot_auction_ratio: int = 2
    hot_bidder_ratio: int = 4
    num_active_people: int = 1000
    num_in_flight_auctions: int = 100

    def __post_init__(self) -> None:
        for name in (
            "first_event_rate",
            "out_of_order_group_size",
            "avg_person_bytes",
            "avg_auction_bytes",
            "avg_bid_bytes",
            "hot_seller_ratio",
            "hot_auction_ratio",
            "hot_bidder_ratio",
            "num_active_people",
            "num_in_flight_auctions",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"NexmarkConfig.{name} must be an int ≥ 1, got {value!r}")
        if self.avg_auction_bytes > 900 or self.avg_person_bytes > 900 or self.avg_bid_bytes > 900:
            raise ConfigError("NexmarkConfig average sizes must be ≤ 900 bytes")


def _mix(z: int) -> int:
    """SplitMix64's output function (Steele et al. 2014): a 64-bit word from a 64-bit state."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _words(event_id: int, count: int) -> list[int]:
    seed = (event_id * _SEED_SPREAD) & _M64
    return [_mix((seed + (k + 1) * _GOLDEN) & _M64) for k in range(count)]


def _string(word: int, max_length: int) -> str:
    """A random string of ``3 + rand(max_length - 3)`` characters with spaces (32 bits)."""
    length = 3 + (word & 0xFFFF) % (max_length - 3)
    offset = (word >> 16) & 0xFFFF
    if offset > _STRING_ROOM:
        offset -= 1024
    return _SPACED[offset : offset + length]


def _extra(word: int, current_size: int, average_size: int) -> str:
    """Padding that brings an event toward ``average_size`` bytes on average (±20 %)."""
    if current_size > average_size:
        return ""
    wanted = average_size - current_size
    delta = round(wanted * 0.2)
    size = wanted - delta + ((word & 0xFFFF) % (2 * delta) if delta else 0)
    offset = (word >> 16) % _STRING_ROOM
    return _LETTERS[offset : offset + size]


def _price(word: int) -> int:
    """``round(10 ** (u * 6) * 100)`` cents, ``u`` uniform in [0, 1): log-uniform, 1 $ to 1 M$."""
    return round(10.0 ** ((word >> 11) * _TWO_POW_MINUS_53 * 6.0) * 100.0)


def last_person(event_id: int) -> int:
    """Base-0 id of the last person created at or before ``event_id``."""
    epoch, offset = divmod(event_id, PROPORTION_DENOMINATOR)
    return epoch * PERSON_PROPORTION + min(offset, PERSON_PROPORTION - 1)


def last_auction(event_id: int) -> int:
    """Base-0 id of the last auction created at or before ``event_id`` (-1 before the first)."""
    epoch, offset = divmod(event_id, PROPORTION_DENOMINATOR)
    if offset < PERSON_PROPORTION:
        epoch -= 1
        offset = AUCTION_PROPORTION - 1
    elif offset >= PERSON_PROPORTION + AUCTION_PROPORTION:
        offset = AUCTION_PROPORTION - 1
    else:
        offset -= PERSON_PROPORTION
    return epoch * AUCTION_PROPORTION + offset


class NexmarkGenerator:
    """Builds event number ``n`` of a Nexmark stream, as a pure function of ``n``.

    Args:
        config: generator parameters.
    """

    def __init__(self, config: NexmarkConfig | None = None) -> None:
        self.config = config or NexmarkConfig()
        c = self.config
        self._base = c.base_time_ms
        self._rate = c.first_event_rate
        self._group = c.out_of_order_group_size
        # An auction lasts up to twice the event time the generator needs to
        # create num_in_flight_auctions auctions (the benchmark's rule).
        self._auction_span_events = (
            c.num_in_flight_auctions * PROPORTION_DENOMINATOR
        ) // AUCTION_PROPORTION
        # A bid's counted size is fixed (four numbers, 32 bytes), so its
        # padding range is too: (least length, spread), or None when no padding.
        wanted = c.avg_bid_bytes - 32
        delta = round(wanted * 0.2)
        self._bid_padding = (wanted - delta, 2 * delta) if wanted >= 0 else None

    def timestamp_ms(self, n: int) -> int:
        """Event time of event number ``n`` in ms (monotone in ``n``)."""
        return self._base + n * 1000 // self._rate

    def event_id(self, n: int) -> int:
        """The event id of event number ``n`` (``n`` itself unless out-of-order groups are on)."""
        g = self._group
        if g == 1:
            return n
        return (n // g) * g + (n * 953) % g

    def event(self, n: int) -> Event:
        """Return event number ``n`` (≥ 0): a Person, an Auction or a Bid.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"event numbers start at 0, got {n}")
        event_id = self.event_id(n)
        ts = self._base + n * 1000 // self._rate
        rem = event_id % PROPORTION_DENOMINATOR
        if rem < PERSON_PROPORTION:
            return self._person(event_id, ts)
        if rem < PERSON_PROPORTION + AUCTION_PROPORTION:
            return self._auction(event_id, n, ts)
        return self._bid(event_id, ts)

    def events(self, start: int, step: int, count: int) -> list[Event]:
        """Return events ``start, start + step, …`` (``count`` of them), as :meth:`event` builds.

        Raises:
            ValueError: ``start`` is negative.
        """
        if start < 0:
            raise ValueError(f"event numbers start at 0, got {start}")
        base, rate = self._base, self._rate
        bid, person, auction = self._bid, self._person, self._auction
        in_order = self._group == 1
        event_id = self.event_id
        out: list[Event] = []
        append = out.append
        for n in range(start, start + step * count, step):
            eid = n if in_order else event_id(n)
            ts = base + n * 1000 // rate
            rem = eid % PROPORTION_DENOMINATOR
            if rem >= PERSON_PROPORTION + AUCTION_PROPORTION:
                append(bid(eid, ts))
            elif rem < PERSON_PROPORTION:
                append(person(eid, ts))
            else:
                append(auction(eid, n, ts))
        return out

    def _next_person(self, event_id: int, word: int) -> int:
        people = last_person(event_id) + 1
        active = min(people, self.config.num_active_people)
        return people - active + word % (active + PERSON_ID_LEAD)

    def _next_auction(self, event_id: int, word: int) -> int:
        last = last_auction(event_id)
        lo = max(last - self.config.num_in_flight_auctions, 0)
        return lo + word % (last - lo + 1 + AUCTION_ID_LEAD)

    def _person(self, event_id: int, ts: int) -> Person:
        w0, w1, w2, w3 = _words(event_id, 4)
        name = f"{FIRST_NAMES[(w0 & 0xFF) % 11]} {LAST_NAMES[((w0 >> 8) & 0xFF) % 9]}"
        email = f"{_string(w0 >> 16, 7)}@{_string(w1 & 0xFFFFFFFF, 5)}.com"
        card = (
            f"{((w1 >> 32) & 0x3FFF) % 10000:04d} {((w1 >> 46) & 0x3FFF) % 10000:04d} "
            f"{(w2 & 0x3FFF) % 10000:04d} {((w2 >> 14) & 0x3FFF) % 10000:04d}"
        )
        city = US_CITIES[((w2 >> 28) & 0xFF) % len(US_CITIES)]
        state = US_STATES[((w2 >> 36) & 0xFF) % len(US_STATES)]
        size = 8 + len(name) + len(email) + len(card) + len(city) + len(state)
        return Person(
            id=last_person(event_id) + FIRST_PERSON_ID,
            name=name,
            email_address=email,
            credit_card=card,
            city=city,
            state=state,
            date_time=ts,
            extra=_extra(w3, size, self.config.avg_person_bytes),
        )

    def _auction(self, event_id: int, n: int, ts: int) -> Auction:
        c = self.config
        w0, w1, w2, w3, w4, w5 = _words(event_id, 6)
        if (w0 & 0xFFFF) % c.hot_seller_ratio > 0:
            seller = (last_person(event_id) // HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        else:
            seller = self._next_person(event_id, (w0 >> 16) & 0xFFFFFFFF)
        initial_bid = _price(w1)
        horizon_ms = self.timestamp_ms(n + self._auction_span_events) - ts
        expires = ts + 1 + (w3 & 0xFFFFFFFF) % max(2 * horizon_ms, 1)
        name = _string(w3 >> 32, 20)
        description = _string(w4 & 0xFFFFFFFF, 100)
        return Auction(
            id=last_auction(event_id) + FIRST_AUCTION_ID,
            item_name=name,
            description=description,
            initial_bid=initial_bid,
            reserve=initial_bid + _price(w2),
            date_time=ts,
            expires=expires,
            seller=seller + FIRST_PERSON_ID,
            category=FIRST_CATEGORY_ID + (w0 >> 48) % NUM_CATEGORIES,
            extra=_extra(w5, 8 + len(name) + len(description) + 40, c.avg_auction_bytes),
        )

    def _bid(self, event_id: int, ts: int) -> Bid:
        # The hot path (92 % of events): the three SplitMix64 words are mixed
        # inline and the bits laid out so that three words suffice:
        # w0: hot auction [0, 16), auction draw [16, 48), hot bidder [48, 64);
        # w1: padding length [0, 11), price [11, 64);
        # w2: bidder draw [0, 32), hot channel [32], channel index [33, 35),
        #     channel number [35, 49), padding offset [49, 64).
        c = self.config
        seed = (event_id * _SEED_SPREAD) & _M64
        z = (seed + _GOLDEN) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        w0 = z ^ (z >> 31)
        z = (seed + 2 * _GOLDEN) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        w1 = z ^ (z >> 31)
        z = (seed + 3 * _GOLDEN) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        w2 = z ^ (z >> 31)
        # a bid's id lies past its epoch's persons and auctions, so the last
        # ones created are the epoch's last (last_person / last_auction inlined)
        epoch = event_id // PROPORTION_DENOMINATOR
        if (w0 & 0xFFFF) % c.hot_auction_ratio > 0:
            last = epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
            auction = (last // HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        else:
            auction = self._next_auction(event_id, (w0 >> 16) & 0xFFFFFFFF)
        if (w0 >> 48) % c.hot_bidder_ratio > 0:
            last = epoch * PERSON_PROPORTION + PERSON_PROPORTION - 1
            bidder = (last // HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        else:
            bidder = self._next_person(event_id, w2 & 0xFFFFFFFF)
        if (w2 >> 32) & 1:
            i = (w2 >> 33) & 3
            channel = HOT_CHANNELS[i]
            url = HOT_URLS[i]
        else:
            channel, url = _channel((w2 >> 35) & 0x3FFF)
        pad = self._bid_padding
        if pad is None:
            extra = ""
        else:
            size = pad[0] + ((w1 & 0x7FF) % pad[1] if pad[1] else 0)
            offset = w2 >> 49
            extra = _LETTERS[offset : offset + size]
        price = round(10.0 ** ((w1 >> 11) * _TWO_POW_MINUS_53 * 6.0) * 100.0)
        return Bid(
            auction + FIRST_AUCTION_ID, bidder + FIRST_PERSON_ID, price, channel, url, ts, extra
        )


_CHANNELS: dict[int, tuple[str, str]] = {}


def _channel(draw: int) -> tuple[str, str]:
    """Name and URL of a non-hot channel (at most :data:`CHANNELS` of them, built once each)."""
    number = draw % CHANNELS
    named = _CHANNELS.get(number)
    if named is None:
        named = (
            f"channel-{number}",
            f"https://www.nexmark.com/item.htm?query=1&channel_id={number}",
        )
        _CHANNELS[number] = named
    return named
