"""Unit tests of the timer services (heap and RocksDB, each test on both)."""

import struct

import pytest

from state_backends import BackendFactory
from weirflow.errors import StateError
from weirflow.state import (
    CorruptStateError,
    KeyGroupRange,
    UnsupportedStateVersionError,
    ValueStateDescriptor,
)
from weirflow.time import MAX_WATERMARK, TimeWindow


def test_register_is_idempotent_and_keeps_first_order(backends: BackendFactory) -> None:
    timers = backends.timers(KeyGroupRange(0, 4))
    w = TimeWindow(0, 10)
    timers.register_event_time_timer(1, "a", w, 9)
    timers.register_event_time_timer(2, "b", w, 9)
    timers.register_event_time_timer(1, "a", w, 9)
    assert len(timers) == 2
    assert timers.advance_watermark(8) == []
    assert timers.advance_watermark(9) == [(9, 1, "a", w), (9, 2, "b", w)]
    assert timers.advance_watermark(MAX_WATERMARK) == []


def test_delete_then_register_moves_to_the_end(backends: BackendFactory) -> None:
    timers = backends.timers(KeyGroupRange(0, 4))
    timers.register_event_time_timer(0, "a", None, 5)
    timers.register_event_time_timer(0, "b", None, 5)
    timers.delete_event_time_timer(0, "a", None, 5)
    timers.delete_event_time_timer(0, "zz", None, 5)
    timers.register_event_time_timer(0, "a", None, 5)
    assert timers.advance_watermark(5) == [(5, 0, "b", None), (5, 0, "a", None)]


def test_next_timer_skips_deleted_timestamps(backends: BackendFactory) -> None:
    timers = backends.timers(KeyGroupRange(0, 4))
    timers.register_event_time_timer(0, "a", None, 3)
    timers.register_event_time_timer(0, "a", None, 7)
    timers.delete_event_time_timer(0, "a", None, 3)
    assert timers.next_event_time_timer() == 7
    assert timers.next_processing_time_timer() is None
    timers.register_processing_time_timer(3, "p", None, 100)
    assert timers.next_processing_time_timer() == 100
    assert timers.advance_watermark(1000) == [(7, 0, "a", None)]
    assert timers.advance_processing_time(99) == []
    assert timers.advance_processing_time(100) == [(100, 3, "p", None)]
    assert timers.is_empty()


def test_timer_outside_range_is_refused(backends: BackendFactory) -> None:
    timers = backends.timers(KeyGroupRange(2, 4))
    with pytest.raises(StateError, match="key group 4"):
        timers.register_event_time_timer(4, "a", None, 1)
    with pytest.raises(StateError, match="key group 1"):
        timers.register_processing_time_timer(1, "a", None, 1)


def test_snapshot_is_isolated_from_later_changes(backends: BackendFactory) -> None:
    timers = backends.timers(KeyGroupRange(0, 4))
    timers.register_event_time_timer(0, "a", None, 5)
    snap = timers.snapshot()
    timers.register_event_time_timer(0, "b", None, 5)
    timers.advance_watermark(10)
    restored = backends.timers(KeyGroupRange(0, 4))
    restored.restore(snap.to_bytes_per_key_group().items())
    assert restored.advance_watermark(10) == [(5, 0, "a", None)]


def test_corrupt_timer_blob_is_refused(backends: BackendFactory) -> None:
    """Scenario: a timer blob is damaged on disk or mislabelled as keyed state."""
    timers = backends.timers(KeyGroupRange(0, 4))
    timers.register_event_time_timer(2, ("k", 1), TimeWindow(0, 5), 4)
    blob = timers.snapshot().to_bytes_per_key_group()[2]
    with pytest.raises(CorruptStateError, match="key group 2"):
        backends.timers(KeyGroupRange(0, 4)).restore([(2, blob[:-2])])
    with pytest.raises(UnsupportedStateVersionError, match="key group 2"):
        backends.timers(KeyGroupRange(0, 4)).restore(
            [(2, blob[:4] + struct.pack(">H", 9) + blob[6:])]
        )
    backend = backends.keyed(KeyGroupRange(0, 4))
    backend.get_state(ValueStateDescriptor("v"))
    with pytest.raises(CorruptStateError, match="not a WFTM blob"):
        backend.set_current_key("x", key_group=2)
        backend.get_state(ValueStateDescriptor("v")).update(1)
        state_blob = backend.snapshot().to_bytes_per_key_group()[2]
        backends.timers(KeyGroupRange(0, 4)).restore([(2, state_blob)])


def test_duplicate_timer_blob_is_refused(backends: BackendFactory) -> None:
    """Scenario: the same key group's timers are handed to restore twice."""
    timers = backends.timers(KeyGroupRange(0, 4))
    timers.register_event_time_timer(1, "a", None, 4)
    blobs = list(timers.snapshot().to_bytes_per_key_group().items())
    target = backends.timers(KeyGroupRange(0, 4))
    with pytest.raises(StateError, match="restored twice"):
        target.restore(blobs + blobs)
    assert target.is_empty()
