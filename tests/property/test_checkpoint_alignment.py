"""Barrier alignment: an aligned snapshot holds exactly the records before the barrier; an
unaligned one holds them in its operator state plus its in-flight data."""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from weirflow.graph import OperatorSpec
from weirflow.runtime import Batch, Channel, CheckpointBarrier, Task
from weirflow.runtime.events import END_OF_PARTITION
from weirflow.runtime.inflight import ChannelState
from weirflow.runtime.operators import OperatorContext, OperatorLogic
from weirflow.runtime.partitioners import RecordWriter
from weirflow.serde import decode
from weirflow.state import KeyGroupRange


class Recorder(OperatorLogic):
    """Remembers every record; its snapshot is the list so far."""

    def __init__(self) -> None:
        super().__init__(
            OperatorSpec(id=0, name="recorder", kind="map"),
            OperatorContext("job", 0, 1, 128, KeyGroupRange(0, 128), clock=lambda: 0),
        )
        self.seen: list[Any] = []

    def process_batch(self, values, timestamps, keys):  # type: ignore[no-untyped-def]
        self.seen.extend(values)

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        return list(self.seen)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[list[object]], list[int], list[int]]:
    """Per input: batches with one barrier at a random place; plus a random delivery order."""
    n_inputs = draw(st.integers(2, 4))
    inputs: list[list[object]] = []
    for i in range(n_inputs):
        n_batches = draw(st.integers(0, 6))
        batches: list[object] = [
            Batch([(i, b, r) for r in range(3)], None) for b in range(n_batches)
        ]
        batches.insert(draw(st.integers(0, n_batches)), CheckpointBarrier(1, 0, True))
        if draw(st.booleans()):
            batches.append(END_OF_PARTITION)
        inputs.append(batches)
    order = draw(st.permutations([i for i, items in enumerate(inputs) for _ in items]))
    steps = draw(st.lists(st.integers(0, 3), min_size=len(order), max_size=len(order)))
    return inputs, list(order), steps


def _run(inputs: list[list[object]], order: list[int], steps: list[int], aligned: bool):
    snapshots: list[list[Any]] = []
    rec = Recorder()
    channels = [Channel(64) for _ in inputs]
    task = Task(
        "recorder[0/1]",
        0,
        [rec],
        channels,
        [],
        on_snapshot=lambda t, cid, states: snapshots.append(states["recorder"]),
    )
    pending = [list(items) for items in inputs]
    for i in range(len(pending)):
        pending[i] = [
            CheckpointBarrier(1, 0, aligned) if isinstance(x, CheckpointBarrier) else x
            for x in pending[i]
        ]
    for i, k in zip(order, steps, strict=True):
        channels[i].put(pending[i].pop(0))
        for _ in range(k):
            task.step()
    for _ in range(200):
        task.step()
    return rec, snapshots


def _before_barrier(inputs: list[list[object]]) -> set[Any]:
    out = set()
    for items in inputs:
        for x in items:
            if isinstance(x, CheckpointBarrier):
                break
            if isinstance(x, Batch):
                out.update(x.values)
    return out


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_aligned_snapshot_is_exactly_the_pre_barrier_records(schedule) -> None:  # type: ignore[no-untyped-def]
    inputs, order, steps = schedule
    rec, snapshots = _run(inputs, order, steps, aligned=True)
    assert len(snapshots) == 1, "one barrier on every input gives one snapshot"
    assert set(snapshots[0]) == _before_barrier(inputs)
    assert len(snapshots[0]) == len(set(snapshots[0]))
    everything = {v for items in inputs for x in items if isinstance(x, Batch) for v in x.values}
    assert set(rec.seen) == everything and len(rec.seen) == len(everything)


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_unaligned_snapshot_misses_no_pre_barrier_record(schedule) -> None:  # type: ignore[no-untyped-def]
    """At-least-once: nothing before the barrier is missing (later records may be in)."""
    inputs, order, steps = schedule
    _rec, snapshots = _run(inputs, order, steps, aligned=False)
    assert len(snapshots) == 1
    assert _before_barrier(inputs) <= set(snapshots[0])


# -- unaligned checkpoints -------------------------------------------------------


class Relay(Recorder):
    """A recorder that also emits every record it sees on its main output."""

    def __init__(self, clock: list[int], seen: list[Any] | None = None) -> None:
        super().__init__()
        self.ctx = OperatorContext("job", 0, 1, 128, KeyGroupRange(0, 128), clock=lambda: clock[0])
        self.seen = list(seen or [])

    def process_batch(self, values, timestamps, keys):  # type: ignore[no-untyped-def]
        self.seen.extend(values)
        self.output.emit(values, timestamps)


def _relay_task(relay: Relay, inputs: list[Channel], out: Channel, on_snapshot: Any) -> Task:
    writer = RecordWriter([out], "forward", None, 128, buffer_size=2)
    relay.output.targets("main").writers.append(writer)
    return Task("relay[0/1]", 0, [relay], inputs, [writer], on_snapshot=on_snapshot)


def _drain(out: Channel, into: list[object], n: int) -> None:
    for _ in range(n):
        item = out.poll()
        if item is None:
            return
        into.append(item)


def _records(items: list[object]) -> list[Any]:
    return [v for x in items if isinstance(x, Batch) for v in x.values]


@settings(max_examples=150, deadline=None)
@given(
    schedules(),
    st.sampled_from([0, 0, 3, 15]),
    st.lists(st.integers(0, 2), min_size=60, max_size=60),
)
def test_unaligned_snapshot_and_in_flight_restore_the_aligned_state(  # type: ignore[no-untyped-def]
    schedule, unaligned_after_ms, drains
) -> None:
    """Unaligned (at once, or after an alignment timeout) under a slow downstream.

    The operator state plus the input in-flight records equal the aligned snapshot
    (every record before the barrier, once); the records emitted before the snapshot
    are exactly those the receiver got before the barrier plus the output in-flight
    records; restoring (state, replay in-flight, then the post-barrier input) processes
    and emits every record exactly once.
    """
    inputs, order, steps = schedule
    clock = [0]
    barrier = CheckpointBarrier(1, 0, True, unaligned_after_ms)
    with_barrier = [
        [barrier if isinstance(x, CheckpointBarrier) else x for x in items] for items in inputs
    ]
    pending = [list(items) for items in with_barrier]
    channels = [Channel(64) for _ in inputs]
    out = Channel(1)
    snapshots: list[list[Any]] = []
    captured: list[ChannelState] = []

    def on_snapshot(task: Task, cid: int, states: dict[str, Any]) -> None:
        snapshots.append(states["recorder"])
        capture = task.capture_of(cid)
        if capture is None:
            # aligned within the alignment timeout: no in-flight data
            assert unaligned_after_ms > 0
            captured.append(ChannelState(output=[[[]]]))
        else:
            capture.on_complete(captured.append)

    relay = Relay(clock)
    task = _relay_task(relay, channels, out, on_snapshot)
    received: list[object] = []
    tick = 0
    for i, k in zip(order, steps, strict=True):
        channels[i].put(pending[i].pop(0))
        for _ in range(k):
            clock[0] += 1
            task.step()
            _drain(out, received, drains[tick % len(drains)])
            tick += 1
    for _ in range(300):
        clock[0] += 1
        task.step()
        _drain(out, received, 1)

    everything = {v for items in inputs for x in items if isinstance(x, Batch) for v in x.values}
    assert len(snapshots) == 1 and len(captured) == 1
    state, channel_state = snapshots[0], captured[0]
    in_flight = channel_state.decoded(decode)
    replayed_in = _records([x for items in in_flight.inputs.values() for x in items])
    event(f"input in-flight records: {'some' if replayed_in else 'none'}")
    # operator state + input in-flight = the aligned snapshot, each record once
    assert sorted(state + replayed_in) == sorted(_before_barrier(inputs))
    # what the operator emitted before its snapshot = received before the barrier + output in-flight
    cut = next(k for k, x in enumerate(received) if isinstance(x, CheckpointBarrier))
    replayed_out = _records([x for t in in_flight.output[0] for x in t])
    event(f"output in-flight records: {'some' if replayed_out else 'none'}")
    assert sorted(_records(received[:cut]) + replayed_out) == sorted(state)
    # no record lost or doubled in the run itself
    assert sorted(relay.seen) == sorted(everything)

    # restore: the snapshot, its in-flight data, then the input after the barrier
    after = [items[items.index(barrier) + 1 :] for items in with_barrier]
    restored = Relay(clock, seen=state)
    fresh = [Channel(64) for _ in inputs]
    out2 = Channel(64)
    task2 = _relay_task(restored, fresh, out2, lambda t, cid, s: None)
    task2.replay(in_flight)
    for i, items in enumerate(after):
        for x in items:
            fresh[i].put(x)
    received2: list[object] = []
    for _ in range(300):
        task2.step()
        _drain(out2, received2, 64)
    assert sorted(restored.seen) == sorted(everything)
    assert sorted(_records(received[:cut]) + _records(received2)) == sorted(everything)
