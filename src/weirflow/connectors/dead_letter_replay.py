"""Replaying dead letters of an event-log topic into a job's input topic, exactly once.

What was replayed is recorded in a ledger topic, ``<dead-letter topic>.replayed``
(one partition, created on the first replay, without retention: a ledger
record that retention removed would let its letter be replayed again): one
record per replayed letter, keyed by the letter's
``<topic>/<partition>/<offset>``. :func:`replay_dead_letters`
runs these steps:

1. register the transactional producer ``weirflow.dlq-replay.<topic>``; this
   fences any replay of the same topic still running, so that it can no
   longer commit;
2. read the ledger: the letters already replayed;
3. read the dead-letter topic; keep the letters that match ``where`` and are
   not in the ledger;
4. in one transaction, append each kept letter to the input topic (its value,
   the original key, timestamp and own headers, plus ``weirflow.attempts``
   and ``weirflow.replay.of``) and its ledger record; commit.

The input records and the ledger records become visible together or not at
all, and step 1 orders concurrent replays, so every letter is replayed at
most once, and a replay that fails (or is fenced) leaves nothing behind: run
it again. A letter whose original partition is known and whose input topic
is that original topic goes back to that partition; otherwise a keyed record
goes where its key hashes, an unkeyed one round robin.

Dead letters of an operator after the source (not a decoding failure) hold
the operator's input, stored JSON-encoded: replaying them into the source
topic is right only when the source hands that operator its records as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from weirflow.connectors.dead_letters import ATTEMPTS, FILTERS, REPLAY_OF, StoredDeadLetter
from weirflow.errors import ConfigError
from weirflow.eventlog import EventLog, Record

LEDGER_SUFFIX = ".replayed"
_BATCH = 1000


def ledger_topic(dead_letter_topic: str) -> str:
    """The ledger topic recording the replays of ``dead_letter_topic``."""
    return dead_letter_topic + LEDGER_SUFFIX


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


def read_dead_letters(log: EventLog, topic: str) -> Iterator[StoredDeadLetter]:
    """Every committed letter of ``topic``, partition by partition, in offset order."""
    for p in range(log.partition_count(topic)):
        pos = log.start_offset(topic, p)
        while batch := log.read(topic, p, pos, max_records=_BATCH):
            yield from (StoredDeadLetter.from_record(r) for r in batch)
            pos = batch[-1].offset + 1


def replayed_ids(log: EventLog, dead_letter_topic: str) -> set[str]:
    """Ids (``<topic>/<partition>/<offset>``) of the letters already replayed."""
    ledger = ledger_topic(dead_letter_topic)
    if ledger not in log.list_topics():
        return set()
    out = set()
    pos = log.start_offset(ledger, 0)
    while batch := log.read(ledger, 0, pos, max_records=_BATCH):
        out.update(r.key.decode() for r in batch if r.key is not None)
        pos = batch[-1].offset + 1
    return out


def replay_dead_letters(
    log: EventLog,
    dead_letter_topic: str,
    into: str,
    where: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Append the dead letters not replayed yet to ``into``, exactly once (see the module).

    Args:
        log: the event log.
        dead_letter_topic: the topic a dead-letter sink writes.
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
    where = dict(where or {})
    partitions = log.partition_count(into)
    producer = None if dry_run else log.transactional_producer(
        f"weirflow.dlq-replay.{dead_letter_topic}"
    )
    done = replayed_ids(log, dead_letter_topic)
    kept: list[StoredDeadLetter] = []
    skipped = not_matching = 0
    for letter in read_dead_letters(log, dead_letter_topic):
        if not letter.matches(where):
            not_matching += 1
        elif letter.letter_id in done:
            skipped += 1
        else:
            kept.append(letter)
    if producer is not None and kept:
        ledger = ledger_topic(dead_letter_topic)
        log.create_topic(ledger, 1, exist_ok=True)
        producer.begin()
        producer.append(into, [_replay_record(x, into, partitions) for x in kept])
        producer.append(ledger, [_ledger_record(x, into) for x in kept])
        producer.commit()
    return ReplayReport(kept, skipped, not_matching, dry_run)


def _replay_record(letter: StoredDeadLetter, into: str, partitions: int) -> Record:
    original = letter.original
    partition = (
        original.partition
        if original is not None and original.topic == into and original.partition < partitions
        else None
    )
    return Record(
        letter.value,
        key=letter.key,
        timestamp_ms=letter.timestamp_ms,
        headers=(
            *letter.headers,
            (ATTEMPTS, str(letter.attempts).encode()),
            (REPLAY_OF, letter.letter_id.encode()),
        ),
        partition=partition,
    )


def _ledger_record(letter: StoredDeadLetter, into: str) -> Record:
    return Record(
        json.dumps({"into": into, "error_type": letter.error_type}).encode(),
        key=letter.letter_id.encode(),
    )
