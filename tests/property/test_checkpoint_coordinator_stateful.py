"""Stateful property test of the checkpoint coordinator against a simple model.

Random sequences of time advances, periodic and forced triggers, acknowledgements
(also late ones), declines and timeout checks; after every step the invariants hold:
ids strictly increase, periodic triggers never exceed max_concurrent pending,
no checkpoint older than the latest completed one stays pending,
a checkpoint is COMPLETED exactly when every task acknowledged it and its
manifest was committed, and storage keeps exactly the newest ``retained`` completed.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from weirflow.checkpoint import (
    CheckpointConfig,
    CheckpointCoordinator,
    CheckpointStatus,
    CheckpointStorage,
    TaskSnapshot,
    state_file_name,
)

TASKS = ("src[0/2]", "src[1/2]", "agg[0/1]")


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


class CoordinatorMachine(RuleBasedStateMachine):
    @initialize(
        max_concurrent=st.integers(1, 3),
        retained=st.integers(1, 3),
        interval_ms=st.integers(100, 2000),
        min_pause_ms=st.integers(0, 2000),
        timeout_ms=st.integers(500, 6000),
    )
    def start(self, max_concurrent, retained, interval_ms, min_pause_ms, timeout_ms) -> None:
        self.storage = CheckpointStorage(f"memory://stateful-{uuid.uuid4().hex}", "job")
        self.config = CheckpointConfig(
            storage=self.storage.root_url,
            interval=timedelta(milliseconds=interval_ms),
            min_pause=timedelta(milliseconds=min_pause_ms),
            timeout=timedelta(milliseconds=timeout_ms),
            max_concurrent=max_concurrent,
            retained=retained,
        )
        self.clock = Clock()
        self.coord = CheckpointCoordinator(
            self.config, self.storage, TASKS, self.clock, parallelism=2, max_parallelism=16
        )
        self.triggered: list[int] = []
        self.forced: set[int] = set()
        self.acked: dict[int, set[str]] = {}
        self.completed: list[int] = []

    def teardown(self) -> None:
        if hasattr(self, "storage") and self.storage.fs.exists(self.storage.root):
            self.storage.fs.rm(self.storage.root, recursive=True)

    @rule(ms=st.integers(0, 3000))
    def advance(self, ms: int) -> None:
        self.clock.now_ms += ms

    @rule()
    def maybe_trigger(self) -> None:
        checkpoint_id = self.coord.maybe_trigger()
        if checkpoint_id is not None:
            self._record_trigger(checkpoint_id)

    @rule()
    def trigger_now(self) -> None:
        checkpoint_id = self.coord.trigger_now()
        self.forced.add(checkpoint_id)
        self._record_trigger(checkpoint_id)

    def _record_trigger(self, checkpoint_id: int) -> None:
        assert not self.triggered or checkpoint_id > self.triggered[-1]
        self.triggered.append(checkpoint_id)
        self.acked[checkpoint_id] = set()

    @precondition(lambda self: self.triggered)
    @rule(data=st.data(), task=st.sampled_from(TASKS))
    def acknowledge(self, data: st.DataObject, task: str) -> None:
        checkpoint_id = data.draw(st.sampled_from(self.triggered))
        self._ack(checkpoint_id, task)

    @precondition(lambda self: self.coord.pending())
    @rule(data=st.data())
    def acknowledge_remaining(self, data: st.DataObject) -> None:
        checkpoint_id = data.draw(st.sampled_from(self.coord.pending()))
        for task in TASKS:
            if task not in self.acked[checkpoint_id]:
                self._ack(checkpoint_id, task)

    def _ack(self, checkpoint_id: int, task: str) -> None:
        was_pending = checkpoint_id in self.coord.pending()
        if was_pending and task in self.acked[checkpoint_id]:
            return
        handle = self.storage.write_state(checkpoint_id, state_file_name(task, "s"), b"x")
        result = self.coord.acknowledge(checkpoint_id, TaskSnapshot(task, {"s": handle}))
        if not was_pending:
            assert result is None
            return
        self.acked[checkpoint_id].add(task)
        if self.acked[checkpoint_id] == set(TASKS):
            assert result is not None and result.checkpoint_id == checkpoint_id
            self.completed.append(checkpoint_id)
        else:
            assert result is None

    @precondition(lambda self: self.triggered)
    @rule(data=st.data())
    def decline(self, data: st.DataObject) -> None:
        checkpoint_id = data.draw(st.sampled_from(self.triggered))
        was_pending = checkpoint_id in self.coord.pending()
        self.coord.decline(checkpoint_id, TASKS[0], "property test")
        if was_pending:
            assert self.coord.status(checkpoint_id) is CheckpointStatus.FAILED

    @rule()
    def check_timeouts(self) -> None:
        for checkpoint_id in self.coord.check_timeouts():
            assert self.coord.status(checkpoint_id) is CheckpointStatus.FAILED

    @invariant()
    def pending_within_limits(self) -> None:
        if not hasattr(self, "coord"):
            return
        pending = self.coord.pending()
        periodic = [n for n in pending if n not in self.forced]
        assert len(periodic) <= self.config.max_concurrent
        assert all(self.coord.status(n) is CheckpointStatus.PENDING for n in pending)
        latest = self.coord.latest_completed_id
        # A completion subsumes every older pending checkpoint.
        assert latest is None or all(n > latest for n in pending)

    @invariant()
    def completed_iff_all_acked_and_manifest_kept(self) -> None:
        if not hasattr(self, "coord"):
            return
        for checkpoint_id in self.triggered:
            is_completed = self.coord.status(checkpoint_id) is CheckpointStatus.COMPLETED
            assert is_completed == (checkpoint_id in self.completed)
            if is_completed:
                assert self.acked[checkpoint_id] == set(TASKS)
        newest = sorted(self.completed)[-self.config.retained :] if self.completed else []
        assert self.storage.completed_checkpoints() == newest
        expected_latest = max(self.completed) if self.completed else None
        assert self.coord.latest_completed_id == expected_latest


TestCoordinatorStateful = CoordinatorMachine.TestCase
TestCoordinatorStateful.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
