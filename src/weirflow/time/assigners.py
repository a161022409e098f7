"""Window assigners: which windows a record belongs to.

All assigners are frozen dataclasses with ``timedelta`` (or count) fields in
their public constructor and integer milliseconds internally (``*_ms``).
Window starts are aligned to the epoch plus ``offset`` as in Flink's
``TimeWindow.getWindowStartWithOffset``; Python's ``%`` is a true modulo, so
negative timestamps land in the right window without Flink's correction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from weirflow.errors import ConfigError
from weirflow.time.duration import to_ms
from weirflow.time.window import TimeWindow


def _signed_ms(duration: timedelta, what: str) -> int:
    sign = -1 if duration < timedelta(0) else 1
    return sign * to_ms(abs(duration), what)


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Fixed-size, non-overlapping windows ``[k*size + offset, (k+1)*size + offset)``.

    Args:
        size: window length; positive, whole milliseconds.
        offset: shift of the window starts from the epoch (e.g. a time zone);
            any whole number of milliseconds, only ``offset % size`` matters.

    Attributes:
        size_ms: ``size`` in ms.
        offset_ms: ``offset`` in ms.

    Raises:
        ConfigError: non-positive or sub-millisecond size, sub-millisecond offset.
    """

    size: timedelta
    offset: timedelta = timedelta(0)
    size_ms: int = field(init=False)
    offset_ms: int = field(init=False)
    is_merging = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_ms", to_ms(self.size, "size", positive=True))
        object.__setattr__(self, "offset_ms", _signed_ms(self.offset, "offset"))

    def window_start(self, timestamp_ms: int) -> int:
        """Return the start (ms) of the window containing ``timestamp_ms`` (negative ok)."""
        return timestamp_ms - (timestamp_ms - self.offset_ms) % self.size_ms

    def assign(self, timestamp_ms: int) -> list[TimeWindow]:
        """Return the one window containing ``timestamp_ms``."""
        start = timestamp_ms - (timestamp_ms - self.offset_ms) % self.size_ms
        return [TimeWindow(start, start + self.size_ms)]


@dataclass(frozen=True, slots=True)
class SlidingWindows:
    """Overlapping windows of length ``size``, one starting every ``slide``.

    Args:
        size: window length; positive, whole milliseconds.
        slide: distance between window starts; positive, whole milliseconds.
        offset: shift of the window starts from the epoch.

    Attributes:
        size_ms, slide_ms, offset_ms: the durations in ms.

    Raises:
        ConfigError: non-positive or sub-millisecond size or slide.
    """

    size: timedelta
    slide: timedelta
    offset: timedelta = timedelta(0)
    size_ms: int = field(init=False)
    slide_ms: int = field(init=False)
    offset_ms: int = field(init=False)
    is_merging = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_ms", to_ms(self.size, "size", positive=True))
        object.__setattr__(self, "slide_ms", to_ms(self.slide, "slide", positive=True))
        object.__setattr__(self, "offset_ms", _signed_ms(self.offset, "offset"))

    def assign(self, timestamp_ms: int) -> list[TimeWindow]:
        """Return every window containing ``timestamp_ms``, ordered by start.

        Returns:
            Windows ``[s, s + size_ms)`` with ``s`` aligned to ``slide_ms`` (plus
            offset) and ``timestamp_ms - size_ms < s <= timestamp_ms``.
        """
        size, slide = self.size_ms, self.slide_ms
        last_start = timestamp_ms - (timestamp_ms - self.offset_ms) % slide
        first_start = last_start - (size - 1 - (timestamp_ms - last_start)) // slide * slide
        return [TimeWindow(s, s + size) for s in range(first_start, last_start + 1, slide)]


@dataclass(frozen=True, slots=True)
class SessionWindows:
    """Sessions: activity separated by at least ``gap`` of inactivity.

    Each record gets the window ``[ts, ts + gap)``; the window operator merges
    windows that intersect (see :class:`~weirflow.time.MergingWindowSet`).

    Args:
        gap: the inactivity gap; positive, whole milliseconds.

    Attributes:
        gap_ms: ``gap`` in ms.

    Raises:
        ConfigError: non-positive or sub-millisecond gap.
    """

    gap: timedelta
    gap_ms: int = field(init=False)
    is_merging = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "gap_ms", to_ms(self.gap, "gap", positive=True))

    def assign(self, timestamp_ms: int) -> list[TimeWindow]:
        """Return ``[TimeWindow(timestamp_ms, timestamp_ms + gap_ms)]``."""
        return [TimeWindow(timestamp_ms, timestamp_ms + self.gap_ms)]


@dataclass(frozen=True, slots=True)
class CountWindows:
    """Windows by record count, per key (Flink's ``countWindow``).

    Tumbling (``slide is None``): the window fires on every ``size``-th record
    of a key, over the last ``size`` records, which are then purged.
    Sliding: the window fires on every ``slide``-th record of a key, over the
    last ``size`` records (fewer while fewer than ``size`` have arrived, as
    in Flink, whose sliding count window is a count evictor plus a count
    trigger).

    End of input: as in Flink, a partial window (fewer than ``size`` records
    since the last firing, tumbling; fewer than ``slide`` since the last
    firing, sliding) is never fired; its records produce no output.

    Args:
        size: records per window (>= 1).
        slide: records between firings (>= 1), or ``None`` for tumbling.

    Raises:
        ConfigError: ``size`` or ``slide`` below 1.
    """

    size: int
    slide: int | None = None
    is_merging = False

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size < 1:
            raise ConfigError(f"count window size must be an int >= 1, got {self.size!r}")
        if self.slide is not None and (type(self.slide) is not int or self.slide < 1):
            raise ConfigError(f"count window slide must be an int >= 1, got {self.slide!r}")

    @property
    def is_sliding(self) -> bool:
        """Whether the windows slide (``slide`` given)."""
        return self.slide is not None

    @property
    def fire_every(self) -> int:
        """Records of a key between two firings: ``slide``, or ``size`` when tumbling."""
        return self.size if self.slide is None else self.slide

    def fires_at(self, count: int) -> bool:
        """Return whether the window fires on a key's ``count``-th record.

        Args:
            count: 1-based record count of the key: since the start for sliding
                windows, since the last purge for tumbling ones.
        """
        return count > 0 and count % self.fire_every == 0

    def window_length(self, count: int) -> int:
        """Return how many of a key's most recent records a firing at ``count`` covers."""
        return min(count, self.size)
