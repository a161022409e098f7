"""Consumer-group positions and lag; retention by age and by size."""

from __future__ import annotations

from typing import Protocol

import pytest

from weirflow.eventlog import (
    EventLog,
    InvalidArgumentError,
    OffsetOutOfRangeError,
    PartitionDescription,
    Record,
    UnknownTopicError,
)


class ManualClock(Protocol):
    """The conftest clock: integer milliseconds, moved by setting ``now_ms``."""

    now_ms: int


def test_commit_and_read_positions(log: EventLog) -> None:
    log.create_topic("t", 2)
    log.append("t", [Record(b"v", partition=p) for p in (0, 0, 0, 1)])
    assert log.committed_offset("g", "t", 0) is None
    log.commit_offsets("g", {("t", 0): 2, ("t", 1): 1})
    assert log.committed_offset("g", "t", 0) == 2
    log.commit_offsets("g", {("t", 0): 3})
    assert log.committed_offset("g", "t", 0) == 3
    assert log.committed_offset("other", "t", 0) is None


def test_lag_is_end_minus_committed_over_all_partitions(log: EventLog) -> None:
    log.create_topic("a", 2)
    log.create_topic("b", 1)
    log.create_topic("untouched", 1)
    log.append("a", [Record(b"v", partition=p) for p in (0, 0, 0, 1, 1)])
    log.append("b", [Record(b"v")] * 4)
    log.commit_offsets("g", {("a", 0): 1, ("b", 0): 4})
    assert log.lag("g") == [("a", 0, 1, 3, 2), ("a", 1, None, 2, 2), ("b", 0, 4, 4, 0)]
    assert log.lag("nobody") == []


def test_commit_past_end_is_refused_and_nothing_is_stored(log: EventLog) -> None:
    log.create_topic("t", 2)
    log.append("t", [Record(b"v", partition=0)])
    with pytest.raises(OffsetOutOfRangeError, match="end offset is 0"):
        log.commit_offsets("g", {("t", 0): 1, ("t", 1): 1})
    assert log.committed_offset("g", "t", 0) is None


def test_bad_group_input_is_refused(log: EventLog) -> None:
    log.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError, match="group"):
        log.commit_offsets("", {("t", 0): 0})
    with pytest.raises(InvalidArgumentError, match="offset"):
        log.commit_offsets("g", {("t", 0): -1})
    with pytest.raises(UnknownTopicError):
        log.commit_offsets("g", {("nope", 0): 0})


def test_age_retention_removes_a_prefix_by_append_time(log: EventLog, clock: ManualClock) -> None:
    log.create_topic("t", 1, retention_ms=10_000)
    log.create_topic("keep", 1)
    clock.now_ms = 100_000
    log.append("t", [Record(b"old")] * 3)
    log.append("keep", [Record(b"old")] * 3)
    clock.now_ms = 105_000
    log.append("t", [Record(b"new")] * 2)
    assert log.apply_retention(now_ms=110_000) == 0
    assert log.apply_retention(now_ms=110_001) == 3
    assert log.start_offset("t", 0) == 3
    assert [(r.offset, r.value) for r in log.read("t", 0, 3)] == [(3, b"new"), (4, b"new")]
    with pytest.raises(OffsetOutOfRangeError, match=r"3\.\.5"):
        log.read("t", 0, 0)
    assert log.describe("t").partitions[0] == PartitionDescription(0, 3, 5, 2, 6)
    assert log.end_offset("keep", 0) == 3 and log.start_offset("keep", 0) == 0
    clock.now_ms = 200_000
    assert log.apply_retention() == 2
    assert log.describe("t").partitions[0] == PartitionDescription(0, 5, 5, 0, 0)
    assert log.append("t", [Record(b"next")]) == [(0, 5)]


def test_size_retention_keeps_the_newest_records_that_fit(log: EventLog) -> None:
    log.create_topic("t", 2, retention_bytes=25)
    log.append("t", [Record(b"x" * 10, partition=0) for _ in range(5)])
    log.append("t", [Record(b"y" * 30, partition=1)])
    assert log.apply_retention() == 4
    d = log.describe("t")
    assert d.partitions[0] == PartitionDescription(0, 3, 5, 2, 20)
    assert d.partitions[1] == PartitionDescription(1, 1, 1, 0, 0)
    assert log.apply_retention() == 0


def test_retention_works_in_chunks_over_many_records(log: EventLog, clock: ManualClock) -> None:
    log.create_topic("t", 1, retention_ms=1)
    for _ in range(5):
        log.append("t", [Record(b"v")] * 9_000)
    clock.now_ms += 10
    log.append("t", [Record(b"last")])
    assert log.apply_retention() == 45_000
    assert [r.value for r in log.read("t", 0, 45_000)] == [b"last"]


def test_group_behind_retention_keeps_its_position(log: EventLog, clock: ManualClock) -> None:
    log.create_topic("t", 1, retention_ms=0)
    log.append("t", [Record(b"v")] * 4)
    log.commit_offsets("g", {("t", 0): 1})
    clock.now_ms += 1
    log.apply_retention()
    assert log.committed_offset("g", "t", 0) == 1
    log.commit_offsets("g", {("t", 0): 2})
    assert log.lag("g") == [("t", 0, 2, 4, 2)]
