"""Barrier alignment: an aligned snapshot holds exactly the records before the barrier."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.graph import OperatorSpec
from weirflow.runtime import Batch, Channel, CheckpointBarrier, Task
from weirflow.runtime.events import END_OF_PARTITION
from weirflow.runtime.operators import OperatorContext, OperatorLogic
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
