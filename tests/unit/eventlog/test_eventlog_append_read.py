"""Appends and reads: dense offsets, routing, limits, isolation and bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from weirflow.eventlog import (
    ConsumedRecord,
    EventLog,
    InvalidArgumentError,
    OffsetOutOfRangeError,
    PartitionOutOfRangeError,
    Record,
)
from weirflow.serde import stable_hash


def test_offsets_are_dense_per_partition_and_returned_in_order(log: EventLog) -> None:
    log.create_topic("t", 2)
    first = log.append(
        "t", [Record(b"a", partition=0), Record(b"b", partition=1), Record(b"c", partition=0)]
    )
    assert first == [(0, 0), (1, 0), (0, 1)]
    second = log.append("t", [Record(b"d", partition=0)])
    assert second == [(0, 2)]
    assert [r.value for r in log.read("t", 0, 0)] == [b"a", b"c", b"d"]
    assert [r.offset for r in log.read("t", 0, 0)] == [0, 1, 2]
    assert log.end_offset("t", 0) == 3
    assert log.start_offset("t", 0) == 0


def test_records_round_trip_all_fields(log: EventLog) -> None:
    log.create_topic("t", 1)
    rec = Record(
        b"v", key=b"k", timestamp_ms=1_700_000_000_123, headers=(("trace", b"\x00\x01"), ("x", b""))
    )
    log.append("t", [rec, Record(None)])
    got = log.read("t", 0, 0)
    assert got == [
        ConsumedRecord(
            "t", 0, 0, b"k", b"v", 1_700_000_000_123, (("trace", b"\x00\x01"), ("x", b""))
        ),
        ConsumedRecord("t", 0, 1, None, None, 0, ()),
    ]


def test_keyed_records_go_to_the_stable_hash_partition(log: EventLog) -> None:
    log.create_topic("t", 5)
    keys = [b"user-%d" % i for i in range(50)]
    placed = log.append("t", [Record(b"v", key=k) for k in keys])
    assert [p for p, _ in placed] == [stable_hash(k) % 5 for k in keys]


def test_same_key_same_partition_in_another_process(log: EventLog) -> None:
    log.create_topic("t", 7)
    mine = [p for p, _ in log.append("t", [Record(b"v", key=b"key-%d" % i) for i in range(20)])]
    code = (
        "import sys\n"
        "from weirflow.eventlog import EventLog, Record\n"
        "with EventLog(sys.argv[1], 'process') as log:\n"
        "    placed = log.append('t', [Record(b'v', key=b'key-%d' % i) for i in range(20)])\n"
        "print(','.join(str(p) for p, _ in placed))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(log.path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert [int(p) for p in out.stdout.strip().split(",")] == mine


def test_unkeyed_records_go_round_robin(log: EventLog) -> None:
    log.create_topic("t", 3)
    placed = log.append("t", [Record(b"v") for _ in range(7)])
    assert [p for p, _ in placed] == [0, 1, 2, 0, 1, 2, 0]
    assert [p for p, _ in log.append("t", [Record(b"v")])] == [1]


def test_read_respects_max_records_and_max_bytes(log: EventLog) -> None:
    log.create_topic("t", 1)
    log.append("t", [Record(b"x" * 10) for _ in range(10)])
    assert len(log.read("t", 0, 2, max_records=3)) == 3
    assert [r.offset for r in log.read("t", 0, 2, max_bytes=35)] == [2, 3, 4]
    assert [r.offset for r in log.read("t", 0, 2, max_bytes=30)] == [2, 3, 4]
    assert [r.offset for r in log.read("t", 0, 2, max_bytes=29)] == [2, 3]
    # The first record comes back even when it alone is over the limit.
    assert [r.offset for r in log.read("t", 0, 5, max_bytes=1)] == [5]


def test_read_at_end_is_empty_and_past_end_raises(log: EventLog) -> None:
    log.create_topic("t", 1)
    log.append("t", [Record(b"a"), Record(b"b")])
    assert log.read("t", 0, 2) == []
    with pytest.raises(OffsetOutOfRangeError, match=r"offset 3 .* 0\.\.2"):
        log.read("t", 0, 3)


def test_partition_out_of_range_is_named(log: EventLog) -> None:
    log.create_topic("t", 2)
    with pytest.raises(PartitionOutOfRangeError, match=r"partition 2 .* 0\.\.1"):
        log.read("t", 2, 0)
    with pytest.raises(PartitionOutOfRangeError, match="partition -1"):
        log.end_offset("t", -1)
    with pytest.raises(PartitionOutOfRangeError, match="partition 9"):
        log.append("t", [Record(b"ok", partition=0), Record(b"bad", partition=9)])
    assert log.end_offset("t", 0) == 0


@pytest.mark.parametrize(
    "bad",
    [
        Record("text"),  # type: ignore[arg-type]
        Record(b"v", key="text"),  # type: ignore[arg-type]
        Record(b"v", timestamp_ms=1.5),  # type: ignore[arg-type]
        Record(b"v", timestamp_ms=2**70),
        Record(b"v", headers=(("h", "text"),)),  # type: ignore[arg-type]
        Record(b"v", headers=((1, b"x"),)),  # type: ignore[arg-type]
        Record(7),  # type: ignore[arg-type]
    ],
)
def test_bad_records_are_refused_and_the_batch_is_not_appended(log: EventLog, bad: Record) -> None:
    log.create_topic("t", 1)
    log.append("t", [Record(b"before")])
    with pytest.raises(InvalidArgumentError):
        log.append("t", [Record(b"ok"), bad, Record(b"ok")])
    assert [r.value for r in log.read("t", 0, 0)] == [b"before"]
    assert log.append("t", [Record(b"after")]) == [(0, 1)]


def test_non_record_elements_are_refused(log: EventLog) -> None:
    log.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError, match="Record"):
        log.append("t", [b"raw bytes"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"from_offset": -1}, "from_offset"),
        ({"from_offset": 0, "max_records": 0}, "max_records"),
        ({"from_offset": 0, "max_bytes": -1}, "max_bytes"),
        ({"from_offset": 0, "isolation": "dirty"}, "isolation"),
    ],
)
def test_bad_read_arguments_are_refused(log: EventLog, kwargs: dict, match: str) -> None:
    log.create_topic("t", 1)
    with pytest.raises(InvalidArgumentError, match=match):
        log.read("t", 0, **kwargs)


def test_empty_append_returns_nothing(log: EventLog) -> None:
    log.create_topic("t", 1)
    assert log.append("t", []) == []
    assert log.end_offset("t", 0) == 0


def test_committed_data_survives_reopen(log: EventLog) -> None:
    log.create_topic("t", 1)
    log.append("t", [Record(b"%d" % i) for i in range(100)])
    log.close()
    with EventLog(log.path, "fsync") as again:
        assert [r.value for r in again.read("t", 0, 0)] == [b"%d" % i for i in range(100)]
