"""Test helper: what a dead-letter replay must have put back into the input topic."""

from __future__ import annotations

from collections.abc import Sequence

from weirflow.connectors.dead_letters import ATTEMPTS, REPLAY_OF, StoredDeadLetter
from weirflow.eventlog import ConsumedRecord


def assert_replayed_as_letters(
    records: Sequence[ConsumedRecord], letters: Sequence[StoredDeadLetter], attempts: int
) -> None:
    """Assert that ``records`` (the input records carrying ``weirflow.replay.of``) are the
    ``letters`` once each: value, key, timestamp, original partition, the ``trace`` header,
    and ``attempts`` in ``weirflow.attempts``."""
    by_id = {d.letter_id: d for d in letters}
    assert sorted(dict(r.headers)[REPLAY_OF].decode() for r in records) == sorted(by_id)
    for r in records:
        h = dict(r.headers)
        d = by_id[h[REPLAY_OF].decode()]
        assert d.original is not None
        assert (r.value, r.key, r.timestamp_ms, r.partition) == (
            d.value,
            d.key,
            d.timestamp_ms,
            d.original.partition,
        )
        assert h["trace"] == dict(d.headers)["trace"]
        assert h[ATTEMPTS] == str(attempts).encode()


def assert_letters_keep_their_originals(
    letters: Sequence[StoredDeadLetter],
    sources: Sequence[ConsumedRecord],
    error_type: str,
    operator: str,
) -> None:
    """Assert that each first-generation letter names ``error_type``, ``operator`` and one
    attempt, and holds the value, key, timestamp and headers of the source record at its
    original position (one of ``sources``)."""
    originals = {(r.partition, r.offset): r for r in sources}
    for d in letters:
        assert (d.error_type, d.operator, d.attempts) == (error_type, operator, 1)
        assert d.original is not None
        source = originals[(d.original.partition, d.original.offset)]
        assert (d.value, d.key, d.timestamp_ms) == (source.value, source.key, source.timestamp_ms)
        assert d.headers == source.headers
