"""Topics: creation, listing, description and their errors."""

from __future__ import annotations

import pytest

from weirflow.eventlog import (
    EventLog,
    InvalidArgumentError,
    PartitionDescription,
    Record,
    TopicExistsError,
    UnknownTopicError,
)


def test_create_list_and_describe_empty_topic(log: EventLog) -> None:
    log.create_topic("orders", 3, retention_ms=60_000, retention_bytes=1 << 20)
    log.create_topic("audit", 1)
    assert log.list_topics() == ["audit", "orders"]
    assert log.partition_count("orders") == 3
    d = log.describe("orders")
    assert d.name == "orders"
    assert (d.retention_ms, d.retention_bytes) == (60_000, 1 << 20)
    assert d.partitions == [PartitionDescription(p, 0, 0, 0, 0) for p in range(3)]


def test_describe_counts_records_and_bytes(log: EventLog) -> None:
    log.create_topic("t", 2)
    log.append("t", [Record(b"abc", key=b"k", partition=0), Record(b"12345", partition=1)])
    log.append("t", [Record(None, partition=0)])
    d = log.describe("t")
    assert d.partitions[0] == PartitionDescription(0, 0, 2, 2, 4)
    assert d.partitions[1] == PartitionDescription(1, 0, 1, 1, 5)


def test_create_existing_topic_raises_unless_exist_ok(log: EventLog) -> None:
    log.create_topic("t", 2)
    with pytest.raises(TopicExistsError, match="'t'"):
        log.create_topic("t", 2)
    log.create_topic("t", 2, exist_ok=True)
    with pytest.raises(TopicExistsError, match="2 partition"):
        log.create_topic("t", 3, exist_ok=True)


@pytest.mark.parametrize("name", ["", "a b", "x/y", "é", "a" * 250, 7])
def test_bad_topic_names_are_refused(log: EventLog, name: object) -> None:
    with pytest.raises(InvalidArgumentError, match="topic name"):
        log.create_topic(name, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("partitions", [0, -1, 1.5, True])
def test_bad_partition_counts_are_refused(log: EventLog, partitions: object) -> None:
    with pytest.raises(InvalidArgumentError, match="partitions"):
        log.create_topic("t", partitions)  # type: ignore[arg-type]


def test_negative_retention_is_refused(log: EventLog) -> None:
    with pytest.raises(InvalidArgumentError, match="retention_ms"):
        log.create_topic("t", 1, retention_ms=-5)


def test_unknown_topic_is_named(log: EventLog) -> None:
    for call in (
        lambda: log.describe("nope"),
        lambda: log.partition_count("nope"),
        lambda: log.append("nope", [Record(b"x")]),
        lambda: log.read("nope", 0, 0),
    ):
        with pytest.raises(UnknownTopicError, match="'nope'"):
            call()


def test_topic_created_by_another_instance_is_seen(log: EventLog) -> None:
    other = EventLog(log.path, "process")
    try:
        with pytest.raises(UnknownTopicError):
            other.partition_count("late")
        log.create_topic("late", 4)
        assert other.partition_count("late") == 4
    finally:
        other.close()
