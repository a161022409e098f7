"""Value types of the event log: what goes in, what comes out, and descriptions.

All are frozen msgspec structs: cheap to build on the read path, hashable,
and encodable with :mod:`weirflow.serde`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from weirflow.eventlog.errors import InvalidArgumentError
from weirflow.serde import decode, encode

Headers = tuple[tuple[str, bytes], ...]


class Record(msgspec.Struct, frozen=True):
    """One record to append.

    Attributes:
        value: the payload (bytes), or ``None`` (a tombstone or an empty record).
        key: the key (bytes) or ``None``. With no explicit ``partition``, a
            keyed record goes to partition ``serde.stable_hash(key) % partitions``
            (CRC-32 of the key bytes, the same in every process and Python
            version); an unkeyed one goes round-robin.
        timestamp_ms: event time in integer milliseconds since the epoch.
        headers: ``(name, value)`` pairs, names ``str`` and values ``bytes``.
        partition: the target partition, or ``None`` to choose as above.
    """

    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int = 0
    headers: Headers = ()
    partition: int | None = None


class ConsumedRecord(msgspec.Struct, frozen=True):
    """One record read back from the log.

    Attributes:
        topic: the topic name.
        partition: the partition index.
        offset: the record's offset in its partition (dense, from 0).
        key: the key bytes or ``None``.
        value: the value bytes or ``None``.
        timestamp_ms: event time in integer milliseconds, as appended.
        headers: ``(name, value)`` pairs as appended.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Headers


class PartitionDescription(msgspec.Struct, frozen=True):
    """Size and position of one partition.

    Attributes:
        partition: the partition index.
        start_offset: the lowest offset still stored (raised by retention).
        end_offset: the offset the next committed record will get.
        record_count: ``end_offset - start_offset``.
        bytes: stored bytes of those records: key + value + encoded headers.
    """

    partition: int
    start_offset: int
    end_offset: int
    record_count: int
    bytes: int


class TopicDescription(msgspec.Struct, frozen=True):
    """A topic and its partitions.

    Attributes:
        name: the topic name.
        partitions: one description per partition, by index.
        retention_ms: records older than this many milliseconds (by append
            time) are removed by ``apply_retention``; ``None`` keeps them.
        retention_bytes: each partition is trimmed from its start to at most
            this many bytes by ``apply_retention``; ``None`` for no limit.
    """

    name: str
    partitions: list[PartitionDescription]
    retention_ms: int | None
    retention_bytes: int | None


class CommitsAfter(msgspec.Struct, frozen=True):
    """The committed transactions of one transactional id marked with checkpoints after a given one.

    Attributes:
        transactional_id: the producer's transactional id.
        newest_checkpoint_id: the highest checkpoint id among them.
        transactions: how many transactions.
        records: how many records they committed, all partitions together.
    """

    transactional_id: str
    newest_checkpoint_id: int
    transactions: int
    records: int


class TransactionHandle(msgspec.Struct, frozen=True):
    """Names one prepared transaction, so that any process can commit or abort it.

    A two-phase-commit sink stores this as its committable in a checkpoint.

    Attributes:
        transactional_id: the producer's transactional id.
        epoch: the producer epoch that opened the transaction.
        sequence: the transaction's number for this transactional id
            (increasing over all epochs).
    """

    transactional_id: str
    epoch: int
    sequence: int

    def to_dict(self) -> dict[str, Any]:
        """Return the handle as a plain dict ``{"transactional_id", "epoch", "sequence"}``."""
        return {
            "transactional_id": self.transactional_id,
            "epoch": self.epoch,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransactionHandle:
        """Build a handle from :meth:`to_dict`'s output.

        Args:
            data: a mapping with ``transactional_id`` (str), ``epoch`` and
                ``sequence`` (int).

        Returns:
            The handle.

        Raises:
            InvalidArgumentError: a field is missing or has the wrong type.
        """
        try:
            tid, epoch, seq = data["transactional_id"], data["epoch"], data["sequence"]
        except (KeyError, TypeError) as e:
            raise InvalidArgumentError(f"not a transaction handle: {data!r} ({e})") from e
        if type(tid) is not str or type(epoch) is not int or type(seq) is not int:
            raise InvalidArgumentError(
                f"not a transaction handle: {data!r} (want str transactional_id, int epoch "
                "and int sequence)"
            )
        return cls(tid, epoch, seq)


def encode_headers(headers: Headers) -> bytes | None:
    """Encode headers for storage; ``None`` for no headers, so the common case costs nothing.

    Args:
        headers: ``(str, bytes)`` pairs.

    Returns:
        ``serde.encode`` of the pairs as lists, or ``None`` when empty.

    Raises:
        InvalidArgumentError: a pair is not ``(str, bytes)``.
    """
    if not headers:
        return None
    pairs = []
    for pair in headers:
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or type(pair[0]) is not str
            or not isinstance(pair[1], bytes)
        ):
            raise InvalidArgumentError(f"a header must be a (str, bytes) pair, got {pair!r}")
        pairs.append([pair[0], bytes(pair[1])])
    return encode(pairs)


def decode_headers(blob: bytes | None) -> Headers:
    """Decode what :func:`encode_headers` stored.

    Args:
        blob: the stored bytes or ``None``.

    Returns:
        A tuple of ``(str, bytes)`` pairs, ``()`` for ``None``.

    Raises:
        weirflow.errors.SerdeError: the bytes are corrupt.
    """
    if blob is None:
        return ()
    return tuple((name, value) for name, value in decode(blob))
