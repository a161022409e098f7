"""Unit tests of session-window merging."""

import pytest

from weirflow.errors import StateError
from weirflow.state import KeyGroupRange, MapStateDescriptor, MemoryKeyedStateBackend
from weirflow.time import MergingWindowSet, TimeWindow, WindowMerge, merge_session_windows

SESSIONS = MapStateDescriptor("sessions")


def window_set() -> tuple[MemoryKeyedStateBackend, MergingWindowSet]:
    backend = MemoryKeyedStateBackend(KeyGroupRange(0, 128))
    backend.set_current_key("user-1")
    return backend, MergingWindowSet(backend.get_state(SESSIONS))


def test_new_window_without_neighbours_is_its_own_state_window() -> None:
    _, sessions = window_set()
    assert sessions.add_window(TimeWindow(0, 10)) == WindowMerge(
        TimeWindow(0, 10), TimeWindow(0, 10)
    )
    assert sessions.windows() == [TimeWindow(0, 10)]


def test_contained_window_changes_nothing() -> None:
    _, sessions = window_set()
    sessions.add_window(TimeWindow(0, 10))
    sessions.add_window(TimeWindow(5, 15))
    assert sessions.add_window(TimeWindow(6, 14)) == WindowMerge(
        TimeWindow(0, 15), TimeWindow(0, 10)
    )


def test_extending_window_keeps_state_window() -> None:
    _, sessions = window_set()
    sessions.add_window(TimeWindow(10, 20))
    merge = sessions.add_window(TimeWindow(20, 30))  # touching merges
    assert merge == WindowMerge(TimeWindow(10, 30), TimeWindow(10, 20), (TimeWindow(10, 20),), ())


def test_bridging_window_merges_two_sessions() -> None:
    _, sessions = window_set()
    sessions.add_window(TimeWindow(0, 10))
    sessions.add_window(TimeWindow(30, 40))
    merge = sessions.add_window(TimeWindow(8, 32))
    assert merge.window == TimeWindow(0, 40)
    assert merge.state_window == TimeWindow(0, 10)
    assert merge.merged_windows == (TimeWindow(0, 10), TimeWindow(30, 40))
    assert merge.merged_state_windows == (TimeWindow(30, 40),)
    assert sessions.windows() == [TimeWindow(0, 40)]
    assert sessions.state_window(TimeWindow(0, 40)) == TimeWindow(0, 10)
    sessions.retire_window(TimeWindow(0, 40))
    assert sessions.windows() == []


def test_window_set_is_in_the_snapshot_per_key() -> None:
    backend, sessions = window_set()
    sessions.add_window(TimeWindow(0, 10))
    sessions.add_window(TimeWindow(5, 20))
    snap = backend.snapshot()
    sessions.add_window(TimeWindow(100, 110))
    restored = MemoryKeyedStateBackend(KeyGroupRange(0, 128))
    restored.restore(snap.to_bytes_per_key_group().items())
    restored.set_current_key("user-1")
    again = MergingWindowSet(restored.get_state(SESSIONS))
    assert again.windows() == [TimeWindow(0, 20)]
    assert again.state_window(TimeWindow(0, 20)) == TimeWindow(0, 10)
    restored.set_current_key("user-2")
    assert again.windows() == []


def test_needs_current_key() -> None:
    backend = MemoryKeyedStateBackend(KeyGroupRange(0, 128))
    sessions = MergingWindowSet(backend.get_state(SESSIONS))
    with pytest.raises(StateError):
        sessions.add_window(TimeWindow(0, 1))


def test_pure_merge() -> None:
    assert merge_session_windows([]) == []
    assert merge_session_windows(
        [TimeWindow(20, 25), TimeWindow(0, 5), TimeWindow(5, 7), TimeWindow(26, 30)]
    ) == [TimeWindow(0, 7), TimeWindow(20, 25), TimeWindow(26, 30)]
