"""Dead letters in a log topic (event log or Kafka): the headers that describe them, read back.

A dead-letter sink writes each :class:`~weirflow.records.DeadLetter` as one
record: the value is the record the operator could not process (raw bytes
for a record a source could not decode), the headers say why
(:func:`dead_letter_headers`). :class:`StoredDeadLetter` reads such a record
back, for ``weirflow dlq`` and for replay.

Attempts across replays: a replayed record carries ``weirflow.attempts``
(the attempts so far). When it fails again, the event-log dead-letter sink
finds it at the letter's original position and adds those attempts to the
new letter's, so the count keeps rising over replays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from weirflow.eventlog import ConsumedRecord
from weirflow.records import DeadLetter, LogPosition

ERROR_TYPE = "weirflow.error.type"
ERROR_MESSAGE = "weirflow.error.message"
ATTEMPTS = "weirflow.attempts"
OPERATOR = "weirflow.operator"
SUBTASK = "weirflow.subtask"
TIMESTAMP = "weirflow.timestamp_ms"
TRACEBACK = "weirflow.traceback"
ORIGINAL_TOPIC = "weirflow.original.topic"
ORIGINAL_PARTITION = "weirflow.original.partition"
ORIGINAL_OFFSET = "weirflow.original.offset"
#: on a replayed record: ``<dead-letter topic>/<partition>/<offset>`` of the letter it came from
REPLAY_OF = "weirflow.replay.of"

#: headers a dead-letter sink or a replay sets; the rest are the original record's own
DEAD_LETTER_HEADERS = frozenset(
    {
        ERROR_TYPE,
        ERROR_MESSAGE,
        ATTEMPTS,
        OPERATOR,
        SUBTASK,
        TIMESTAMP,
        TRACEBACK,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        REPLAY_OF,
    }
)
#: what ``--where`` may filter on
FILTERS = ("error_type", "operator")


def dead_letter_headers(letter: DeadLetter, attempts: int | None = None) -> list[tuple[str, bytes]]:
    """Headers describing a :class:`~weirflow.records.DeadLetter`.

    ``weirflow.error.type``, ``weirflow.error.message``, ``weirflow.attempts``,
    ``weirflow.operator``, ``weirflow.subtask``, ``weirflow.timestamp_ms``
    (when known) and, when the letter's ``position`` is a
    :class:`~weirflow.records.LogPosition` (a record a source could not
    decode), ``weirflow.original.topic``, ``.partition`` and ``.offset``.

    Args:
        letter: the dead letter.
        attempts: the attempts to record (default: the letter's own).
    """
    h = [
        (ERROR_TYPE, letter.error_type.encode()),
        (ERROR_MESSAGE, letter.message.encode()),
        (ATTEMPTS, str(letter.attempts if attempts is None else attempts).encode()),
        (OPERATOR, letter.operator.encode()),
        (SUBTASK, str(letter.subtask).encode()),
    ]
    if letter.timestamp_ms is not None:
        h.append((TIMESTAMP, str(letter.timestamp_ms).encode()))
    pos = letter.position
    if isinstance(pos, LogPosition):
        h += [
            (ORIGINAL_TOPIC, pos.topic.encode()),
            (ORIGINAL_PARTITION, str(pos.partition).encode()),
            (ORIGINAL_OFFSET, str(pos.offset).encode()),
        ]
    return h


def own_headers(headers: Sequence[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """A record's headers without those dead-letter sinks and replays set."""
    return tuple((k, v) for k, v in headers if k not in DEAD_LETTER_HEADERS)


def replayed_attempts(headers: Sequence[tuple[str, bytes]]) -> int:
    """The attempts a replayed record carries (0 for a record never dead-lettered)."""
    value = dict(headers).get(ATTEMPTS)
    return int(value) if value is not None and value.isdigit() else 0


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter as a dead-letter sink stored it.

    Attributes:
        topic, partition, offset: where the letter is (the dead-letter topic).
        value: the record that failed (bytes as stored).
        key: the original record's key, when the sink knew it.
        timestamp_ms: the original record's event time (ms since the epoch).
        headers: the original record's own headers (dead-letter headers removed).
        error_type: qualified class name of the error.
        message: the error's message.
        operator: the operator that failed.
        attempts: calls of the user function so far, over every replay.
        original: where the source read the record, when known.
    """

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...]
    error_type: str
    message: str
    operator: str
    attempts: int
    original: LogPosition | None

    @classmethod
    def from_record(cls, r: ConsumedRecord) -> StoredDeadLetter:
        """Read a dead letter from a record of a dead-letter topic.

        A record without the dead-letter headers (written by something else)
        reads with ``error_type`` and ``operator`` empty and 1 attempt.
        """
        h = {k: v.decode(errors="replace") for k, v in r.headers}
        original = None
        if ORIGINAL_TOPIC in h and h.get(ORIGINAL_PARTITION, "").isdigit():
            offset = h.get(ORIGINAL_OFFSET, "")
            if offset.isdigit():
                original = LogPosition(h[ORIGINAL_TOPIC], int(h[ORIGINAL_PARTITION]), int(offset))
        timestamp = h.get(TIMESTAMP, "")
        return cls(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            value=r.value,
            key=r.key,
            timestamp_ms=int(timestamp) if timestamp.lstrip("-").isdigit() else r.timestamp_ms,
            headers=own_headers(r.headers),
            error_type=h.get(ERROR_TYPE, ""),
            message=h.get(ERROR_MESSAGE, ""),
            operator=h.get(OPERATOR, ""),
            attempts=max(1, replayed_attempts(r.headers)),
            original=original,
        )

    @property
    def letter_id(self) -> str:
        """``<topic>/<partition>/<offset>``: the letter's identity (what a replay records)."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    def matches(self, where: Mapping[str, str]) -> bool:
        """Whether every ``name=value`` of ``where`` (names from :data:`FILTERS`) holds."""
        fields = {"error_type": self.error_type, "operator": self.operator}
        return all(fields.get(k) == v for k, v in where.items())
