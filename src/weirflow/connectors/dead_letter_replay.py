"""Replaying dead letters into a job's input topic, exactly once: the rules both logs share,
and the event-log implementation.

What was replayed is recorded in a ledger topic, ``<dead-letter topic>.replayed``
(one partition, created on the first replay, never shortened by retention: a
ledger record that retention removed would let its letter be replayed
again): one record per replayed letter, keyed by the letter's
``<topic>/<partition>/<offset>``. A replay runs these steps:

1. register the transactional producer ``weirflow.dlq-replay.<topic>``; this
   fences any replay of the same topic still running, so that it can no
   longer commit;
2. read the ledger: the letters already replayed;
3. read the dead-letter topic; keep the letters that match ``where`` and are
   not in the ledger (:func:`select_letters`);
4. in one transaction, append each kept letter to the input topic (its value,
   the original key, timestamp and own headers, plus ``weirflow.attempts``
   and ``weirflow.replay.of``: :func:`replay_headers`) and its ledger record;
   commit.

The input records and the ledger records become visible together or not at
all, and step 1 orders concurrent replays, so every letter is replayed at
most once, and a replay that fails (or is fenced) leaves nothing behind: run
it again. A letter whose original partition is known and whose input topic
is that original topic goes back to that partition (:func:`target_partition`);
otherwise a keyed record goes where its key hashes, an unkeyed one is spread.

:class:`EventLogDeadLetters` does this on the event log;
:class:`weirflow.connectors.kafka.dead_letter_replay.KafkaDeadLetters` on Kafka.
Both satisfy :class:`DeadLetterTopics`, which ``weirflow dlq`` uses.

Dead letters of an operator after the source (not a decoding failure) hold
the operator's input, stored JSON-encoded: replaying them into the source
topic is right only when the source hands that operator its records as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from weirflow.connectors.dead_letters import ATTEMPTS, FILTERS, REPLAY_OF, StoredDeadLetter
from weirflow.errors import ConfigError
from weirflow.eventlog import EventLog, Record
from weirflow.faults import fault_point

LEDGER_SUFFIX = ".replayed"
_BATCH = 1000


def ledger_topic(dead_letter_topic: str) -> str:
    """The ledger topic recording the replays of ``dead_letter_topic``."""
    return dead_letter_topic + LEDGER_SUFFIX


def replay_producer_id(dead_letter_topic: str) -> str:
    """The transactional id of replays of ``dead_letter_topic`` (one at a time: step 1)."""
    return f"weirflow.dlq-replay.{dead_letter_topic}"


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did (or, in a dry run, would do).

    Attributes:
        replayed: the letters appended to the input topic, in dead-letter order.
        already_replayed: matching letters skipped because an earlier replay took them.
        not_matching: letters ``where`` left out.
        dry_run: nothing was written.
    """

    replayed: list[StoredDeadLetter] = field(default_factory=list)
    already_replayed: int = 0
    not_matching: int = 0
    dry_run: bool = False


class DeadLetterTopics(Protocol):
    """The dead-letter topics of one event log or Kafka cluster, as ``weirflow dlq`` reads them."""

    def letters(self, topic: str) -> Iterator[StoredDeadLetter]:
        """Every committed letter of ``topic``, partition by partition, in offset order."""
        ...

    def replayed_ids(self, topic: str) -> set[str]:
        """Ids (``<topic>/<partition>/<offset>``) of the letters of ``topic`` already replayed."""
        ...

    def replay(
        self, topic: str, into: str, where: Mapping[str, str] | None = None, dry_run: bool = False
    ) -> ReplayReport:
        """Append the letters of ``topic`` not replayed yet to ``into``, exactly once."""
        ...


def parse_where(items: list[str]) -> dict[str, str]:
    """Parse ``--where NAME=VALUE`` items (names: ``error_type``, ``operator``).

    Raises:
        ConfigError: an item without ``=`` or with an unknown name.
    """
    where: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in FILTERS:
            raise ConfigError(
                f"--where {item!r}: write NAME=VALUE with NAME one of {', '.join(FILTERS)}"
            )
        where[name.strip()] = value.strip()
    return where


def select_letters(
    letters: Iterable[StoredDeadLetter],
    done: set[str],
    where: Mapping[str, str] | None,
    dry_run: bool,
) -> ReplayReport:
    """Step 3: the letters that match ``where`` and are not in ``done``, as a report."""
    kept: list[StoredDeadLetter] = []
    skipped = not_matching = 0
    for letter in letters:
        if not letter.matches(where or {}):
            not_matching += 1
        elif letter.letter_id in done:
            skipped += 1
        else:
            kept.append(letter)
    return ReplayReport(kept, skipped, not_matching, dry_run)


def replay_headers(letter: StoredDeadLetter) -> tuple[tuple[str, bytes], ...]:
    """The headers of a replayed record: the original's own, its attempts and its letter id."""
    return (
        *letter.headers,
        (ATTEMPTS, str(letter.attempts).encode()),
        (REPLAY_OF, letter.letter_id.encode()),
    )


def target_partition(letter: StoredDeadLetter, into: str, partitions: int) -> int | None:
    """The letter's original partition when ``into`` is its original topic and still has that
    partition, else ``None``."""
    original = letter.original
    if original is not None and original.topic == into and original.partition < partitions:
        return original.partition
    return None


def ledger_value(letter: StoredDeadLetter, into: str) -> bytes:
    """The value of a letter's ledger record (for people reading the ledger; keys decide)."""
    return json.dumps({"into": into, "error_type": letter.error_type}).encode()


class EventLogDeadLetters:
    """:class:`DeadLetterTopics` of an event log (see the module docstring).

    Args:
        log: the open event log.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def letters(self, topic: str) -> Iterator[StoredDeadLetter]:
        """Every committed letter of ``topic``, partition by partition, in offset order.

        Raises:
            UnknownTopicError: ``topic`` does not exist.
        """
        for p in range(self.log.partition_count(topic)):
            pos = self.log.start_offset(topic, p)
            while batch := self.log.read(topic, p, pos, max_records=_BATCH):
                yield from (StoredDeadLetter.from_record(r) for r in batch)
                pos = batch[-1].offset + 1

    def replayed_ids(self, topic: str) -> set[str]:
        """Ids (``<topic>/<partition>/<offset>``) of the letters of ``topic`` already replayed."""
        ledger = ledger_topic(topic)
        if ledger not in self.log.list_topics():
            return set()
        out = set()
        pos = self.log.start_offset(ledger, 0)
        while batch := self.log.read(ledger, 0, pos, max_records=_BATCH):
            out.update(r.key.decode() for r in batch if r.key is not None)
            pos = batch[-1].offset + 1
        return out

    def replay(
        self, topic: str, into: str, where: Mapping[str, str] | None = None, dry_run: bool = False
    ) -> ReplayReport:
        """Append the dead letters of ``topic`` not replayed yet to ``into``, exactly once.

        Args:
            topic: the topic a dead-letter sink writes.
            into: the job's input topic.
            where: only letters whose fields equal these (``error_type``, ``operator``).
            dry_run: report what would be replayed; write nothing.

        Returns:
            The :class:`ReplayReport`.

        Raises:
            UnknownTopicError: either topic does not exist.
            ProducerFencedError: another replay of the same topic started meanwhile
                (nothing of this one was written).
        """
        partitions = self.log.partition_count(into)
        producer = None if dry_run else self.log.transactional_producer(replay_producer_id(topic))
        report = select_letters(self.letters(topic), self.replayed_ids(topic), where, dry_run)
        if producer is not None and report.replayed:
            ledger = ledger_topic(topic)
            self.log.create_topic(ledger, 1, exist_ok=True)
            producer.begin()
            producer.append(into, [_replay_record(x, into, partitions) for x in report.replayed])
            producer.append(
                ledger,
                [Record(ledger_value(x, into), key=x.letter_id.encode()) for x in report.replayed],
            )
            fault_point("replay_commit")
            producer.commit()
        return report


def _replay_record(letter: StoredDeadLetter, into: str, partitions: int) -> Record:
    return Record(
        letter.value,
        key=letter.key,
        timestamp_ms=letter.timestamp_ms,
        headers=replay_headers(letter),
        partition=target_partition(letter, into, partitions),
    )
