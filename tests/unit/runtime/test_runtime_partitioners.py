"""Record writers: key_by, rebalance, broadcast and forward partitioning; credit-bounded flush."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from weirflow.errors import ConfigError
from weirflow.runtime import Batch, Channel, Watermark
from weirflow.runtime.partitioners import RecordWriter
from weirflow.state import key_group_for_key, subtask_for_key_group


def drain(ch: Channel) -> list[Any]:
    items = []
    while (item := ch.poll()) is not None:
        items.append(item)
    return items


def records(ch: Channel) -> list[Any]:
    return [v for item in drain(ch) if isinstance(item, Batch) for v in item.values]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_key_by_sends_each_key_to_the_subtask_owning_its_key_group(n: int) -> None:
    channels = [Channel(1000) for _ in range(n)]
    writer = RecordWriter(channels, "key_by", lambda r: r[0], 128, buffer_size=16)
    rows = [(f"user{i % 37}", i) for i in range(500)]
    writer.write(rows[:250], list(range(250)))
    writer.write(rows[250:], list(range(250, 500)))
    assert writer.flush()
    seen = 0
    for target, ch in enumerate(channels):
        for item in drain(ch):
            assert isinstance(item, Batch)
            assert len(item) <= 16
            assert item.keys == [r[0] for r in item.values]
            assert item.timestamps == [r[1] for r in item.values]
            for key in item.keys:
                assert subtask_for_key_group(128, n, key_group_for_key(key, 128)) == target
            seen += len(item)
    assert seen == 500


def test_key_by_keeps_the_order_of_a_key() -> None:
    channels = [Channel(1000) for _ in range(3)]
    writer = RecordWriter(channels, "key_by", lambda r: r % 5, 128, buffer_size=4)
    for s in range(0, 300, 7):
        writer.write(list(range(s, min(s + 7, 300))), None)
    writer.flush()
    per_key: dict[int, list[int]] = {}
    for ch in channels:
        for v in records(ch):
            per_key.setdefault(v % 5, []).append(v)
    assert all(vs == sorted(vs) for vs in per_key.values())
    assert sum(len(vs) for vs in per_key.values()) == 300


def test_rebalance_spreads_evenly_across_writes() -> None:
    channels = [Channel(1000) for _ in range(3)]
    writer = RecordWriter(channels, "rebalance", None, 128, buffer_size=8)
    total = 0
    for size in [1, 2, 5, 7, 1, 1, 10, 4]:
        writer.write(list(range(total, total + size)), None)
        total += size
        writer.flush()
        counts = [ch.buffered_records for ch in channels]
        assert max(counts) - min(counts) <= 1
    dealt = [records(ch) for ch in channels]
    assert sorted(v for vs in dealt for v in vs) == list(range(total))
    assert dealt[0][:3] == [0, 3, 6]  # round robin, continuing across writes


def test_broadcast_copies_every_record_to_every_channel() -> None:
    channels = [Channel(10) for _ in range(4)]
    writer = RecordWriter(channels, "broadcast", None, 128, buffer_size=100)
    writer.write(["a", "b", "c"], [1, 2, 3])
    writer.flush()
    for ch in channels:
        (batch,) = drain(ch)
        assert batch.values == ["a", "b", "c"]
        assert batch.timestamps == [1, 2, 3]


def test_forward_uses_its_one_channel_and_splits_into_buffers() -> None:
    ch = Channel(10)
    writer = RecordWriter([ch], "forward", None, 128, buffer_size=3)
    writer.write(list(range(8)), None)
    writer.flush()
    assert [b.values for b in drain(ch)] == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_flush_moves_only_what_credit_allows_and_events_wait_behind_buffers() -> None:
    ch = Channel(2)
    writer = RecordWriter([ch], "forward", None, 128, buffer_size=2)
    writer.write(list(range(10)), None)
    writer.broadcast_event(Watermark(99))
    assert writer.flush() is False
    assert writer.blocked_flushes == 1
    assert (ch.buffered_buffers, ch.buffered_records) == (2, 4)
    assert writer.pending_records == 6
    seen: list[Any] = []
    while True:
        item = ch.poll()
        if item is None:
            if writer.flush():
                seen.extend(drain(ch))
                break
            continue
        seen.append(item)
        assert ch.buffered_buffers <= ch.capacity
    values = [v for item in seen if isinstance(item, Batch) for v in item.values]
    assert values == list(range(10))
    assert seen[-1] == Watermark(99)
    assert writer.pending_records == 0


def test_writer_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="key selector"):
        RecordWriter([Channel(1)], "key_by", None, 128, 4)
    with pytest.raises(ConfigError, match="buffer_size"):
        RecordWriter([Channel(1)], "forward", None, 128, 0)


def test_rebalance_over_many_batches_is_balanced() -> None:
    channels = [Channel(10_000) for _ in range(4)]
    writer = RecordWriter(channels, "rebalance", None, 128, buffer_size=64)
    for s in range(0, 1001, 3):
        writer.write(list(range(s, s + 3)), None)
    writer.flush()
    counts = Counter({i: ch.buffered_records for i, ch in enumerate(channels)})
    assert sum(counts.values()) == 1002
    assert max(counts.values()) - min(counts.values()) <= 1


def test_key_by_keeps_each_records_headers_with_it() -> None:
    channels = [Channel(1000) for _ in range(3)]
    writer = RecordWriter(channels, "key_by", lambda r: r % 7, 128, buffer_size=5)
    values = list(range(100))
    writer.write(values, None, [(("traceparent", str(v).encode()),) for v in values])
    assert writer.flush()
    seen = 0
    for ch in channels:
        for item in drain(ch):
            assert isinstance(item, Batch) and item.headers is not None
            assert item.headers == [(("traceparent", str(v).encode()),) for v in item.values]
            seen += len(item)
    assert seen == 100


def test_without_headers_buffers_carry_none() -> None:
    channels = [Channel(1000) for _ in range(2)]
    writer = RecordWriter(channels, "rebalance", None, 128, buffer_size=5)
    writer.write(list(range(20)), None)
    assert writer.flush()
    assert all(item.headers is None for ch in channels for item in drain(ch))
