"""Unaligned checkpoints in one process: under backpressure, after a failure, and rescaled.

The job: a source of 2 splits → a map → ``key_by`` → a keyed running count
(parallelism 2: each subtask reads 2 channels) → a slow two-phase-commit
sink. Processing time is a manual clock moved by the scheduler rounds and by
the sink (1 ms per record), so every run is deterministic and nothing
depends on wall time.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from weirflow import CheckpointConfig, Dataflow, KeyedProcessFunction
from weirflow.checkpoint import CheckpointStatus, CheckpointStorage, CompletedCheckpoint
from weirflow.connectors import IterableSource
from weirflow.errors import ConfigError
from weirflow.runtime import (
    CheckpointedRun,
    LocalScheduler,
    RestartStrategy,
    RunListener,
    RuntimeOptions,
    Task,
    in_flight_items,
    rescale_refusal,
)
from weirflow.state import ValueStateDescriptor

KEYS = 13
OPTIONS = RuntimeOptions(source_batch_size=2048, buffer_size=8, channel_capacity=4)


class ManualClock:
    """Processing time in ms that only the rounds and the slow sink move."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        self.now_ms += max(1, round(seconds * 1000))


class RunningCount(KeyedProcessFunction):
    """Per key: emits ``(key, n)`` for its n-th record."""

    def open(self, ctx):  # type: ignore[no-untyped-def]
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        n = self.count.value() + 1
        self.count.update(n)
        yield (value % KEYS, n)


class _TxWriter:
    def __init__(self, sink: SlowTxSink, subtask: int, restored: Any | None) -> None:
        self.sink = sink
        self.subtask = subtask
        self.open: list[Any] = []
        self.pre_committed: dict[int, list[Any]] = {}
        for committable in (restored or {}).values():
            if committable is not None:
                sink.commit(*committable)

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        self.sink.clock.sleep(len(values) / 1000)
        self.open.extend(values)

    def pre_commit(self, checkpoint_id: int) -> tuple[int, int, list[Any]]:
        records, self.open = self.open, []
        self.pre_committed[checkpoint_id] = records
        return (self.subtask, checkpoint_id, records)

    def commit(self, checkpoint_id: int) -> None:
        for cid in sorted(c for c in self.pre_committed if c <= checkpoint_id):
            self.sink.commit(self.subtask, cid, self.pre_committed.pop(cid))

    def finish(self) -> None:
        return None

    def close(self) -> None:
        return None


class SlowTxSink:
    """Two-phase commit into :attr:`committed`, one entry per (subtask, checkpoint): idempotent."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.committed: dict[tuple[int, int], list[Any]] = {}

    def commit(self, subtask: int, checkpoint_id: int, records: list[Any]) -> None:
        self.committed[(subtask, checkpoint_id)] = list(records)

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> _TxWriter:
        return _TxWriter(self, subtask, restored)

    def output(self) -> Counter[Any]:
        return Counter(tuple(r) for records in self.committed.values() for r in records)


class Crash:
    """A map that raises once, when ``armed()`` says so."""

    def __init__(self, armed: Any) -> None:
        self.armed = armed
        self.crashed = False

    def __call__(self, value: int) -> int:
        if not self.crashed and self.armed():
            self.crashed = True
            raise ConnectionError("injected failure")  # transient: restarted
        return value


class Checkpoints(RunListener):
    """Per checkpoint: in-flight items, and the scheduler rounds from its trigger until every
    task's snapshot was ready to write (its barrier arrived on every input); each restore.

    Once every task's snapshot of a checkpoint is ready, the next round waits until the
    checkpoint writer thread finished it, so that round counts do not depend on how fast
    the files are written: the runs are deterministic.
    """

    def __init__(self) -> None:
        self.in_flight: dict[int, int] = {}
        self.restored_from: list[int | None] = []
        self.first_round: dict[int, int] = {}
        self.ready_round: dict[int, int] = {}
        self.ready_tasks: Counter[int] = Counter()

    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        self.restored_from.append(restored_from)

    def attempt_running(self, scheduler: LocalScheduler, coordinator: Any) -> None:
        for task in scheduler.tasks:
            task.on_snapshot = self._watching(scheduler, task.on_snapshot)
        tasks = len(scheduler.tasks)

        def await_written(now_ms: int) -> bool:
            for c in [c for c, n in self.ready_tasks.items() if n == tasks]:
                del self.ready_tasks[c]
                deadline = time.monotonic() + 30
                while coordinator.status(c) is CheckpointStatus.PENDING:
                    assert time.monotonic() < deadline, f"checkpoint {c} was not written"
                    time.sleep(0.0005)
            return False

        scheduler.hooks.before_round.append(await_written)

    def _watching(self, scheduler: LocalScheduler, inner: Any) -> Any:
        def ready(checkpoint_id: int) -> None:
            self.ready_round[checkpoint_id] = scheduler.rounds
            self.ready_tasks[checkpoint_id] += 1

        def watched(task: Task, checkpoint_id: int, states: dict[str, Any]) -> None:
            self.first_round.setdefault(checkpoint_id, scheduler.rounds)
            capture = task.capture_of(checkpoint_id)
            inner(task, checkpoint_id, states)
            if capture is None:
                ready(checkpoint_id)
            else:
                capture.on_complete(lambda _: ready(checkpoint_id))

        return watched

    def barrier_rounds(self) -> list[int]:
        """Rounds from trigger to all snapshots ready, per completed checkpoint."""
        return [self.ready_round[c] - self.first_round[c] for c in sorted(self.in_flight)]

    def checkpoint_completed(self, completed: CompletedCheckpoint) -> None:
        self.in_flight[completed.checkpoint_id] = in_flight_items(completed.manifest)


def _flow(n: int, clock: ManualClock, sink: SlowTxSink, crash: Crash | None = None) -> Dataflow:
    flow = Dataflow("unaligned")
    stream = flow.source(IterableSource(list(range(n)), partitions=2), name="numbers")
    if crash is not None:
        stream = stream.map(crash, name="crash")
    stream.key_by(lambda v: v % KEYS).process(RunningCount(), name="count").sink(sink, name="out")
    return flow


def _expected(n: int) -> Counter[Any]:
    per_key = Counter(v % KEYS for v in range(n))
    return Counter((k, i) for k, c in per_key.items() for i in range(1, c + 1))


def _run(
    tmp_path: Path,
    flow: Dataflow,
    clock: ManualClock,
    config: CheckpointConfig,
    *,
    rounds: int | None = None,
    restore: str | None = None,
    parallelism: int = 2,
    listener: RunListener | None = None,
) -> Any:
    run = CheckpointedRun(
        flow.graph,
        parallelism,
        128,
        config,
        restore=restore,
        restart=RestartStrategy.fixed_delay(3, timedelta(milliseconds=1)),
        options=OPTIONS,
        clock=clock,
        sleep=clock.sleep,
        listener=listener,
    )

    def install(scheduler: LocalScheduler) -> None:
        def tick(now_ms: int) -> bool:
            clock.now_ms += 1
            return rounds is not None and scheduler.rounds >= rounds

        scheduler.hooks.before_round.append(tick)

    run.scheduler_hook = install
    return run.run()


def _config(tmp_path: Path, **unaligned: Any) -> CheckpointConfig:
    return CheckpointConfig(
        storage=str(tmp_path / "chk"),
        interval=timedelta(seconds=1),
        key=b"k" * 32,
        **unaligned,
    )


def _backpressured(tmp_path: Path, **unaligned: Any) -> tuple[int, Checkpoints]:
    """Run the job at full backpressure for 1,500 rounds; return completed checkpoints."""
    clock = ManualClock()
    listener = Checkpoints()
    result = _run(
        tmp_path,
        _flow(1_000_000, clock, SlowTxSink(clock)),
        clock,
        _config(tmp_path, **unaligned),
        rounds=1_500,
        listener=listener,
    )
    return result.checkpoints_completed, listener


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Checkpoints]:
    """The aligned baseline, run once for both unaligned variants."""
    return _backpressured(tmp_path_factory.mktemp("aligned"))


@pytest.mark.parametrize(
    "unaligned",
    [{"unaligned": True}, {"unaligned": True, "alignment_timeout": timedelta(milliseconds=10)}],
    ids=["unaligned", "alignment-timeout"],
)
def test_under_backpressure_unaligned_checkpoints_complete_where_aligned_ones_wait(
    tmp_path: Path, unaligned: dict[str, Any], aligned_run: tuple[int, Checkpoints]
) -> None:
    """Scenario: a sink 1 ms a record keeps the job at full backpressure for 1,500 rounds.

    Aligned checkpoints wait for the buffered records ahead of each barrier; unaligned
    ones (from the start, or once a 10 ms alignment timeout passed) overtake them.
    """
    aligned, slow = aligned_run
    completed, fast = _backpressured(tmp_path / "unaligned", **unaligned)
    assert aligned >= 3, "aligned checkpoints still complete, slowly"
    assert completed >= 3 * aligned, f"{completed} unaligned vs {aligned} aligned completed"
    # rounds from a trigger until every task's snapshot was ready: the barrier waited
    # behind the buffered records, or overtook them
    assert min(slow.barrier_rounds()) >= 20, slow.barrier_rounds()
    assert max(fast.barrier_rounds()) <= 2, fast.barrier_rounds()
    assert not any(slow.in_flight.values()), "aligned checkpoints hold no in-flight data"
    assert all(fast.in_flight.values()), (
        f"every unaligned one held in-flight data: {fast.in_flight}"
    )

    # at parallelism 1 every edge is chained: its in-flight records have nowhere to go
    clock = ManualClock()
    with pytest.raises(ConfigError, match=r"chained at parallelism 1\): restore at parallelism 2"):
        _run(
            tmp_path,
            _flow(1_000_000, clock, SlowTxSink(clock)),
            clock,
            _config(tmp_path / "unaligned", **unaligned),
            restore="latest",
            parallelism=1,
        )
    # upgrade-check's rule is the restore's
    storage = CheckpointStorage(str(tmp_path / "unaligned" / "chk"), "unaligned", key=b"k" * 32)
    latest = storage.load_manifest(storage.completed_checkpoints()[-1])
    graph = _flow(1, clock, SlowTxSink(clock)).graph
    assert "chained at parallelism 1" in (rescale_refusal(graph, latest, 1) or "")
    assert rescale_refusal(graph, latest, 3) is None


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2)], ids=["2->3", "3->2"])
def test_rescaling_redistributes_in_flight_records_by_key_group(
    tmp_path: Path, before: int, after: int
) -> None:
    """Scenario: the job runs at full backpressure until unaligned checkpoints with
    in-flight records completed and is then cut off; the latest one is restored at another
    parallelism: each in-flight record goes to the subtask owning its key group, replayed
    before new input; committed output equals the batch answer (each key's running count
    has every value once)."""
    n = 20_000
    clock = ManualClock()
    sink = SlowTxSink(clock)
    first, second = Checkpoints(), Checkpoints()
    config = _config(tmp_path, unaligned=True)
    _run(
        tmp_path, _flow(n, clock, sink), clock, config, rounds=300, parallelism=before,
        listener=first,
    )  # fmt: skip
    last = max(first.in_flight)
    assert first.in_flight[last] > 0, f"no in-flight data in the last one: {first.in_flight}"
    _run(
        tmp_path, _flow(n, clock, sink), clock, config, restore="latest", parallelism=after,
        listener=second,
    )  # fmt: skip
    assert second.restored_from[0] == last
    got, want = sink.output(), _expected(n)
    assert got == want, f"missing {sum((want - got).values())}, extra {sum((got - want).values())}"


def test_failure_restores_state_and_in_flight_records_exactly_once(tmp_path: Path) -> None:
    """Scenario: the job fails once after unaligned checkpoints with in-flight records
    completed; the restart restores one of them: committed output equals the batch answer."""
    n = 6_000
    clock = ManualClock()
    sink = SlowTxSink(clock)
    listener = Checkpoints()
    crash = Crash(lambda: sum(1 for v in listener.in_flight.values() if v) >= 3)
    result = _run(
        tmp_path,
        _flow(n, clock, sink, crash),
        clock,
        _config(tmp_path, unaligned=True),
        listener=listener,
    )
    assert crash.crashed and result.restarts == 1
    restored = listener.restored_from[1]
    assert restored is not None and listener.in_flight[restored] > 0, (
        f"the restart restored checkpoint {restored}: {listener.in_flight}"
    )
    got, want = sink.output(), _expected(n)
    assert got == want, f"missing {sum((want - got).values())}, extra {sum((got - want).values())}"
