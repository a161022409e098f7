"""Sources over in-memory data, and a sink that collects into a list (tests, notebooks)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from weirflow.connectors.base import SourceBatch
from weirflow.errors import ConfigError


class IterableSource:
    """A bounded source over a list (or a re-iterable, or a factory of iterators).

    Record ``j`` belongs to split ``j % partitions``; a split's position is
    the number of its records already read, so a restore resumes exactly.

    Args:
        rows: a sequence (sliced per split), a zero-argument callable
            returning a fresh iterator, or a one-shot iterator (then only
            ``partitions=1``, and restore from a checkpoint needs the same
            iterator again).
        partitions: number of splits, ≥ 1.

    Raises:
        ConfigError: ``partitions`` < 1, or a one-shot iterator with
            ``partitions`` > 1.
    """

    bounded = True

    def __init__(
        self,
        rows: Sequence[Any] | Iterable[Any] | Callable[[], Iterator[Any]],
        partitions: int = 1,
    ) -> None:
        if partitions < 1:
            raise ConfigError(f"IterableSource partitions must be ≥ 1, got {partitions}")
        if (
            not isinstance(rows, Sequence)
            and not callable(rows)
            and iter(rows) is rows  # type: ignore[arg-type]
            and partitions > 1
        ):
            raise ConfigError(
                "IterableSource over a one-shot iterator supports partitions=1 only; pass a list "
                "or a function returning a new iterator"
            )
        self.rows = rows
        self.partitions = partitions
        self._one_shot = (
            not isinstance(rows, Sequence) and not callable(rows) and iter(rows) is rows  # type: ignore[arg-type]
        )
        self._handed_out = False

    def list_splits(self) -> list[str]:
        """Split ids ``"0" .. str(partitions - 1)``."""
        return [str(i) for i in range(self.partitions)]

    def _iterator(self, split: int, start: int) -> Iterator[Any]:
        rows = self.rows
        n = self.partitions
        if isinstance(rows, Sequence):
            # islice skips in C without copying the rows, which a slice would
            return itertools.islice(rows, split + start * n, None, n)
        it = rows() if callable(rows) else iter(rows)
        if n > 1:
            it = itertools.islice(it, split, None, n)
        return itertools.islice(it, start, None)

    def create_reader(
        self, splits: Sequence[str], positions: Mapping[str, Any]
    ) -> IterableSourceReader:
        """Create a reader over ``splits``, skipping the records before ``positions``.

        Raises:
            ConfigError: the rows are a one-shot iterator that a reader
                already consumed (a restart or restore would silently lose
                the records read before).
        """
        if self._one_shot:
            if self._handed_out:
                raise ConfigError(
                    "IterableSource over a one-shot iterator cannot be read again after a "
                    "restart or restore; pass a list or a function returning a new iterator"
                )
            self._handed_out = True
        its = {s: self._iterator(int(s), int(positions.get(s, 0))) for s in splits}
        return IterableSourceReader(its, {s: int(positions.get(s, 0)) for s in splits})


class IterableSourceReader:
    """Reads splits of an :class:`IterableSource` round robin, one batch per poll.

    Attributes:
        newly_finished: splits exhausted since the source operator last looked.
    """

    def __init__(self, iterators: dict[str, Iterator[Any]], positions: dict[str, int]) -> None:
        self._iterators = iterators
        self._positions = positions
        self._active = list(iterators)
        self._next = 0
        self.newly_finished: list[str] = []

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """Return the next batch of the next unfinished split, or ``None`` when all are done.

        Args:
            max_records: batch size limit.
            order: splits by preference (the first one still active is read);
                round robin when ``None``.
        """
        if order is not None:
            for split in order:
                if split in self._active:
                    self._next = self._active.index(split)
                    break
        while self._active:
            i = self._next % len(self._active)
            split = self._active[i]
            values = list(itertools.islice(self._iterators[split], max_records))
            if not values:
                self.newly_finished.append(self._active.pop(i))
                continue
            self._next = i + 1
            self._positions[split] += len(values)
            return SourceBatch(split, values, None)
        return None

    def finished(self) -> bool:
        """Whether every split is exhausted."""
        return not self._active

    def positions(self) -> dict[str, Any]:
        """Records read per split."""
        return dict(self._positions)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Nothing to do: positions live in the checkpoint only."""

    def close(self) -> None:
        """Nothing to release."""


class CollectSink:
    """A sink that appends every record to :attr:`results` (one list shared by all subtasks).

    For tests and interactive use with the in-process scheduler: the list
    lives in this process only. Output is visible as written (no
    transactions), so after a failover it may hold records twice.

    Attributes:
        results: the records, in arrival order per subtask.
    """

    def __init__(self) -> None:
        self.results: list[Any] = []
        self._lock = threading.Lock()

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> _CollectWriter:
        """Create the writer of one sink subtask (they all append to :attr:`results`)."""
        return _CollectWriter(self)

    def _extend(self, values: list[Any]) -> None:
        with self._lock:
            self.results.extend(values)


class _CollectWriter:
    def __init__(self, sink: CollectSink) -> None:
        self._sink = sink

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self._sink._extend(values)

    def pre_commit(self, checkpoint_id: int) -> None:
        return None

    def commit(self, checkpoint_id: int) -> None:
        return None

    def finish(self) -> None:
        return None

    def close(self) -> None:
        return None
