"""Channel credit accounting: bounded data buffers, control events always fit, FIFO order."""

from __future__ import annotations

import pytest

from weirflow.errors import ConfigError
from weirflow.runtime import Batch, Channel, CheckpointBarrier, EndOfPartition, Watermark


def test_credit_is_capacity_minus_buffered_buffers() -> None:
    ch = Channel(2, "a -> b")
    assert ch.credit() == 2
    ch.put(Batch([1, 2, 3], None))
    assert (ch.credit(), ch.buffered_buffers, ch.buffered_records) == (1, 1, 3)
    ch.put(Batch([4], [40]))
    assert (ch.credit(), ch.buffered_buffers, ch.buffered_records) == (0, 2, 4)


def test_a_buffer_without_credit_is_refused() -> None:
    ch = Channel(1, "a -> b")
    ch.put(Batch([1], None))
    with pytest.raises(RuntimeError, match="a -> b"):
        ch.put(Batch([2], None))
    assert (ch.buffered_buffers, ch.buffered_records, len(ch)) == (1, 1, 1)


def test_control_events_need_no_credit_and_keep_their_place() -> None:
    ch = Channel(1)
    ch.put(Batch([1], None))
    events = [Watermark(5), CheckpointBarrier(1, 0), EndOfPartition()]
    for e in events:
        ch.put(e)
    assert ch.credit() == 0
    assert len(ch) == 4
    first = ch.poll()
    assert isinstance(first, Batch) and first.values == [1]
    assert ch.credit() == 1
    assert [ch.poll() for _ in events] == events
    assert ch.poll() is None
    assert (ch.buffered_buffers, ch.buffered_records) == (0, 0)


def test_poll_frees_credit_in_fifo_order() -> None:
    ch = Channel(3)
    for i in range(3):
        ch.put(Batch([i] * (i + 1), None))
    got = []
    while (item := ch.poll()) is not None:
        assert isinstance(item, Batch)
        got.append(item.values)
        assert ch.credit() == 3 - ch.buffered_buffers
    assert got == [[0], [1, 1], [2, 2, 2]]
    assert ch.credit() == 3


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Channel(0)
