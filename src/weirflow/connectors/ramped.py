"""A source whose restored readers ramp their read rate up (``weirflow run --startup-ramp``).

After a restart the backlog is there at once; reading it at full speed hits
the downstream systems (a database that is itself recovering) with all of it.
A reader created at restored positions reads through a
:class:`~weirflow.connectors.resilience.StartupRamp` (the one ramp of the
project, also used by sinks): each poll waits for at least one allowance and
asks for no more records than it holds. A fresh start reads at full speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from weirflow.connectors.base import Source, SourceBatch, SourceReader
from weirflow.connectors.resilience import StartupRamp


class RampedSource:
    """Wraps ``source`` so that a reader resuming at restored positions ramps up.

    Optional abilities of ``source`` (committed positions, restore checks) stay
    reachable: attributes this wrapper does not define are ``source``'s.

    Args:
        source: the wrapped source.
        duration_s: length of the ramp in seconds (> 0).
        start_rate: records/s each reader starts from (≥ 1); the rate doubles
            every tenth of the ramp (:class:`StartupRamp`).
    """

    def __init__(self, source: Source, duration_s: float, start_rate: int) -> None:
        self.source = source
        self.duration_s = duration_s
        self.start_rate = start_rate
        self.bounded = source.bounded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def list_splits(self) -> list[str]:
        """The wrapped source's splits."""
        return self.source.list_splits()

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> SourceReader:
        """The wrapped source's reader, ramped when ``positions`` is not empty (a restore)."""
        reader = self.source.create_reader(splits, positions)
        if not positions:
            return reader
        return RampedReader(reader, StartupRamp(self.duration_s, self.start_rate))


class ReaderProxy:
    """A :class:`SourceReader` that passes every call to ``reader``; subclasses change some.

    Attributes the proxy does not define are ``reader``'s, so optional abilities stay.

    Args:
        reader: the wrapped reader.
    """

    def __init__(self, reader: SourceReader) -> None:
        self.reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """The wrapped reader's next batch."""
        return self.reader.poll(max_records, order)

    def finished(self) -> bool:
        """Whether the wrapped reader is done."""
        return self.reader.finished()

    def positions(self) -> dict[str, Any]:
        """The wrapped reader's positions."""
        return self.reader.positions()

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Pass the completion on."""
        self.reader.notify_checkpoint_complete(checkpoint_id)

    def close(self) -> None:
        """Close the wrapped reader."""
        self.reader.close()


class RampedReader(ReaderProxy):
    """A :class:`SourceReader` that reads no faster than its ramp allows.

    Args:
        reader: the wrapped reader.
        ramp: the ramp (started when the reader is created).
    """

    def __init__(self, reader: SourceReader, ramp: StartupRamp) -> None:
        super().__init__(reader)
        self.ramp = ramp

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """Wait for the ramp's allowance, then read up to that many records."""
        return self.reader.poll(self.ramp.acquire(max_records), order)
