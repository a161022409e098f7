"""``NexmarkSource``: a checkpointable, bounded source of Nexmark events (benchmarks, load tests).

Splits are interleaved: with ``k`` splits, split ``i`` produces the event
numbers ``n ≡ i (mod k)``, ``n < events``, in increasing order, so the
splits own disjoint events and together produce each event once. A split's
position is the count of its events already emitted (plain ``int``), which is
all a checkpoint needs: the event for a number is a pure function of it.
Event time is the event's ``date_time`` (a source timestamp; no extractor needed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from weirflow.connectors.base import SourceBatch
from weirflow.connectors.nexmark.generator import NexmarkConfig, NexmarkGenerator
from weirflow.errors import ConfigError


class NexmarkSource:
    """A bounded source of ``events`` Nexmark events in ``splits`` interleaved splits.

    Args:
        events: how many events in all (≥ 0).
        splits: number of splits (≥ 1); split ``i`` goes to source subtask ``i % p``.
        rate: target events per second of wall time, summed over all splits;
            ``None`` produces as fast as the job consumes. Pacing never
            affects event time or content, only when a record becomes available.
        config: generator parameters (:class:`NexmarkConfig`).
        clock_ns: monotonic clock in ns used for pacing only (default
            :func:`time.monotonic_ns`; tests inject their own).

    Raises:
        ConfigError: ``events`` < 0, ``splits`` < 1, or ``rate`` < 1.
    """

    bounded = True

    def __init__(
        self,
        events: int,
        splits: int = 1,
        rate: int | None = None,
        config: NexmarkConfig | None = None,
        clock_ns: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(events, int) or events < 0:
            raise ConfigError(f"NexmarkSource events must be an int ≥ 0, got {events!r}")
        if not isinstance(splits, int) or splits < 1:
            raise ConfigError(f"NexmarkSource splits must be an int ≥ 1, got {splits!r}")
        if rate is not None and (not isinstance(rate, int) or rate < 1):
            raise ConfigError(f"NexmarkSource rate must be None or an int ≥ 1, got {rate!r}")
        self.events = events
        self.splits = splits
        self.rate = rate
        self.config = config or NexmarkConfig()
        self.clock_ns = clock_ns or time.monotonic_ns

    def list_splits(self) -> list[str]:
        """Split ids ``"nexmark-0" … "nexmark-<splits-1>"``."""
        return [f"nexmark-{i}" for i in range(self.splits)]

    def split_size(self, split: int) -> int:
        """Number of events split ``split`` produces in all."""
        if split >= self.events:
            return 0
        return (self.events - split + self.splits - 1) // self.splits

    def create_reader(
        self, splits: Sequence[str], positions: Mapping[str, Any]
    ) -> NexmarkSourceReader:
        """Create a reader over ``splits`` resuming at ``positions`` (events emitted per split).

        Raises:
            ConfigError: a split id this source does not have, or a position
                outside ``[0, split size]``.
        """
        known = set(self.list_splits())
        start: dict[str, int] = {}
        for s in splits:
            if s not in known:
                raise ConfigError(f"NexmarkSource has no split {s!r} (it has {self.splits})")
            pos = int(positions.get(s, 0))
            if not 0 <= pos <= self.split_size(int(s.rsplit("-", 1)[1])):
                raise ConfigError(f"NexmarkSource position {pos} out of range for split {s!r}")
            start[s] = pos
        return NexmarkSourceReader(self, start)


class NexmarkSourceReader:
    """Reads the splits of one source subtask, one batch of one split per poll.

    Attributes:
        newly_finished: splits exhausted since the source operator last looked
            (it releases their watermark).
    """

    def __init__(self, source: NexmarkSource, positions: dict[str, int]) -> None:
        self._source = source
        self._generator = NexmarkGenerator(source.config)
        self._positions = positions
        self._index = {s: int(s.rsplit("-", 1)[1]) for s in positions}
        self._size = {s: source.split_size(i) for s, i in self._index.items()}
        self._active = list(positions)
        self._next = 0
        self.newly_finished: list[str] = []
        # Pacing: each split owns 1/splits of the rate; its j-th event is due
        # at (origin + j * period). A restored split starts due at once, from
        # its position, rather than catching up on time it never ran.
        self._period_ns = (
            source.splits * 1_000_000_000 // source.rate if source.rate is not None else 0
        )
        now = source.clock_ns()
        self._origin = {s: now - p * self._period_ns for s, p in positions.items()}

    def _due(self, split: str, max_records: int) -> int:
        """Events of ``split`` available now: bounded by pacing, the batch size and the end."""
        pos = self._positions[split]
        left = self._size[split] - pos
        limit = min(max_records, left)
        if self._period_ns:
            elapsed = self._source.clock_ns() - self._origin[split]
            limit = min(limit, elapsed // self._period_ns + 1 - pos)
        return limit

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """Return the next events of one split, or ``None`` when none is due now.

        Args:
            max_records: batch size limit.
            order: splits to try first (furthest behind in event time first);
                round robin when ``None``.

        Returns:
            A batch whose ``timestamps`` are the events' ``date_time`` (ms).
        """
        active = self._active
        if not active:
            return None
        n = len(active)
        candidates = (
            [s for s in order if s in self._positions]
            if order is not None
            else [active[(self._next + k) % n] for k in range(n)]
        )
        for split in candidates:
            if split not in active:
                continue
            pos = self._positions[split]
            if pos >= self._size[split]:
                # Reported one poll after the last batch: the source operator
                # releases a finished split's watermark before emitting the
                # batch it polled, which would make that last batch late.
                active.remove(split)
                self.newly_finished.append(split)
                continue
            count = self._due(split, max_records)
            if count <= 0:
                continue
            k = self._source.splits
            values = self._generator.events(self._index[split] + pos * k, k, count)
            self._positions[split] = pos + count
            self._next = (active.index(split) + 1) % len(active)
            return SourceBatch(split, values, [e.date_time for e in values])
        return None

    def finished(self) -> bool:
        """Whether every split has emitted all its events and been reported finished."""
        return not self._active

    def positions(self) -> dict[str, Any]:
        """Events emitted per split."""
        return dict(self._positions)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Nothing to do: positions live in the checkpoint only."""

    def close(self) -> None:
        """Nothing to release."""
