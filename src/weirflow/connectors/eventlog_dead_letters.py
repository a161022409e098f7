"""Dead letters to the event log: a sink for ``dead_letters()`` streams that ``weirflow dlq`` reads.

Each :class:`~weirflow.records.DeadLetter` becomes one record of the
dead-letter topic: the value is the record that failed (encoded as
:func:`~weirflow.connectors.eventlog.default_encode` does: raw bytes for a
record a source could not decode), the headers are the record's own (those
a job with tracing passed along, its ``traceparent`` included) followed by
:func:`~weirflow.connectors.dead_letters.dead_letter_headers` and the
traceback.

When the letter knows where its source read it (a
:class:`~weirflow.records.LogPosition` in a topic of the same log), the sink
reads that original record once, to copy its key, timestamp and own headers
into the letter, and to add the attempts a replayed record carries: so a
replay puts back the original key, timestamp and headers, and a record that
fails again after a replay is stored with its attempt count raised. Dead
letters are rare, so the extra read costs nothing measurable.
"""

from __future__ import annotations

import os
from typing import Any

from weirflow.connectors.dead_letters import (
    TRACEBACK,
    dead_letter_headers,
    own_headers,
    replayed_attempts,
)
from weirflow.connectors.eventlog import EventLogSink, EventLogSinkWriter, Guarantee, default_encode
from weirflow.errors import ConfigError
from weirflow.eventlog import ConsumedRecord, EventLogError, Record
from weirflow.records import DeadLetter, LogPosition


class DeadLetterEventLogSink(EventLogSink):
    """An :class:`EventLogSink` for ``dead_letters()`` streams (see the module docstring).

    Args:
        log_dir: the log directory.
        topic: the dead-letter topic (must exist).
        guarantee: ``exactly_once`` (two-phase commit on checkpoints) or ``at_least_once``.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        topic: str,
        *,
        guarantee: Guarantee = "exactly_once",
    ) -> None:
        super().__init__(log_dir, topic, guarantee=guarantee)

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> EventLogSinkWriter:
        """Create one sink subtask's writer; it resolves the restored checkpoint's transactions."""
        return _DeadLetterWriter(self, f"{job}.{operator}", subtask, parallelism, restored)


class _DeadLetterWriter(EventLogSinkWriter):
    def _records(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> list[Record]:
        # a letter carries the failed record's headers itself
        return [self._letter(v) for v in values]

    def _letter(self, letter: object) -> Record:
        if not isinstance(letter, DeadLetter):
            raise ConfigError(
                f"DeadLetterEventLogSink got a {type(letter).__name__}: it writes the "
                "DeadLetter records of a dead_letters() stream; use EventLogSink for others"
            )
        original = self._original(letter.position)
        if original is None:
            headers = [*own_headers(letter.headers), *dead_letter_headers(letter)]
            return Record(
                default_encode(letter.value),
                timestamp_ms=letter.timestamp_ms or 0,
                headers=(*headers, (TRACEBACK, letter.traceback.encode())),
            )
        attempts = letter.attempts + replayed_attempts(original.headers)
        headers = [*own_headers(original.headers), *dead_letter_headers(letter, attempts)]
        return Record(
            default_encode(letter.value),
            key=original.key,
            timestamp_ms=(
                letter.timestamp_ms if letter.timestamp_ms is not None else original.timestamp_ms
            ),
            headers=(*headers, (TRACEBACK, letter.traceback.encode())),
        )

    def _original(self, position: object) -> ConsumedRecord | None:
        """The record at ``position`` in this log, or ``None`` (elsewhere, gone, unknown)."""
        if not isinstance(position, LogPosition):
            return None
        try:
            found = self.log.read(position.topic, position.partition, position.offset, 1)
        except EventLogError:
            return None
        return found[0] if found and found[0].offset == position.offset else None
