"""Both timer services (heap and RocksDB) fire exactly the due timers, each once, in
(timestamp, registration) order."""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state_backends import STATE_BACKENDS, opened
from weirflow.state import InternalTimerService, KeyGroupRange

RANGE = KeyGroupRange(0, 8)

timer_ids = st.tuples(
    st.integers(0, 7), st.sampled_from(["a", "b", ("c", 1)]), st.sampled_from([None, 1, "w"])
)
timestamps = st.integers(-50, 50)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("register"), timer_ids, timestamps),
        st.tuples(st.just("delete"), timer_ids, timestamps),
        st.tuples(st.just("advance"), st.just(None), timestamps),
        # RocksDB writes buffered registrations at a snapshot: firing then mixes both
        st.tuples(st.just("snapshot"), st.just(None), st.just(0)),
    ),
    max_size=60,
)


class Reference:
    """A brute-force model: a list of pending timers in registration order."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, tuple[int, Any, Any]]] = []

    def register(self, tid: tuple[int, Any, Any], ts: int) -> None:
        if (ts, tid) not in self.pending:
            self.pending.append((ts, tid))

    def delete(self, tid: tuple[int, Any, Any], ts: int) -> None:
        if (ts, tid) in self.pending:
            self.pending.remove((ts, tid))

    def advance(self, wm: int) -> list[tuple[int, int, Any, Any]]:
        due = [(ts, tid) for ts, tid in self.pending if ts <= wm]
        self.pending = [(ts, tid) for ts, tid in self.pending if ts > wm]
        due.sort(key=lambda t: t[0])  # stable: registration order within a timestamp
        return [(ts, *tid) for ts, tid in due]


def apply(service: InternalTimerService, ref: Reference, op: tuple) -> None:
    kind, tid, ts = op
    if kind == "register":
        service.register_event_time_timer(*tid, ts)
        ref.register(tid, ts)
    elif kind == "delete":
        service.delete_event_time_timer(*tid, ts)
        ref.delete(tid, ts)
    elif kind == "snapshot":
        service.snapshot()
    else:
        assert service.advance_watermark(ts) == ref.advance(ts)
    expected_next = min((t for t, _ in ref.pending), default=None)
    assert service.next_event_time_timer() == expected_next


@pytest.mark.parametrize("kind", STATE_BACKENDS)
@settings(max_examples=150, deadline=None)
@given(ops)
def test_fires_due_timers_once_in_order(
    kind: str, rocksdb_root: Path, operations: list[tuple]
) -> None:
    with opened(kind, rocksdb_root) as f:
        service, ref = f.timers(RANGE), Reference()
        for op in operations:
            apply(service, ref, op)
        assert service.advance_watermark(2**63 - 1) == ref.advance(2**63 - 1)
        assert service.is_empty()
        assert service.advance_watermark(2**63 - 1) == []


@pytest.mark.parametrize("kind", STATE_BACKENDS)
@settings(max_examples=80, deadline=None)
@given(ops, ops)
def test_restore_keeps_pending_timers_and_order(
    kind: str, rocksdb_root: Path, before: list[tuple], after: list[tuple]
) -> None:
    with opened(kind, rocksdb_root) as f:
        service, ref = f.timers(RANGE), Reference()
        for op in before:
            apply(service, ref, op)
        snap = service.snapshot()
        for op in after:  # later changes must not leak into the snapshot
            if op[0] != "advance":
                apply(service, ref, op)
        restored = f.timers(RANGE)
        restored.restore(snap.to_bytes_per_key_group().items())
        replay = Reference()
        for op in before:
            if op[0] == "register":
                replay.register(op[1], op[2])
            elif op[0] == "delete":
                replay.delete(op[1], op[2])
            elif op[0] == "advance":
                replay.advance(op[2])
        assert restored.advance_watermark(2**63 - 1) == replay.advance(2**63 - 1)


@pytest.mark.parametrize("kind", STATE_BACKENDS)
@settings(max_examples=60, deadline=None)
@given(ops)
def test_processing_time_timers_split_across_rescaling(
    kind: str, rocksdb_root: Path, operations: list[tuple]
) -> None:
    with opened(kind, rocksdb_root) as f:
        service, ref = f.timers(RANGE), Reference()
        for kind, tid, ts in operations:
            if kind == "register":
                service.register_processing_time_timer(*tid, ts)
                ref.register(tid, ts)
            elif kind == "delete":
                service.delete_processing_time_timer(*tid, ts)
                ref.delete(tid, ts)
        blobs = list(service.snapshot().to_bytes_per_key_group().items())
        halves = [f.timers(KeyGroupRange(0, 3)), f.timers(KeyGroupRange(3, 8))]
        for half in halves:
            half.restore(blobs)
        fired_per_half = [half.advance_processing_time(100) for half in halves]
        for half, fired in zip(halves, fired_per_half, strict=True):
            assert all(kg in half.key_group_range for _, kg, _, _ in fired)
            assert [t[0] for t in fired] == sorted(t[0] for t in fired)
        union = fired_per_half[0] + fired_per_half[1]
        assert sorted(union, key=repr) == sorted(ref.advance(100), key=repr)
