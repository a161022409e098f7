"""Stop with a final checkpoint, restore at another parallelism (and on another state
backend), finish: the output is exact."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from state_backends import STATE_BACKENDS, make_state_backend
from weirflow import CheckpointConfig, Dataflow, KeyedProcessFunction, WatermarkStrategy
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.eventlog import EventLog, Record
from weirflow.runtime import CheckpointedRun, RuntimeOptions, wall_clock_ms
from weirflow.state import MemoryStateBackend, StateBackend, ValueStateDescriptor
from weirflow.windows import SessionWindows, SlidingWindows, TumblingWindows

N = 20_000


class RunningTotal(KeyedProcessFunction):
    """Per user: running count in ValueState; emits (user, count) every 100th record."""

    def open(self, ctx):  # type: ignore[no-untyped-def]
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        n = self.count.value() + 1
        self.count.update(n)
        if n % 100 == 0:
            yield [value["user"], n]


def _input(log_dir: Path) -> list[dict]:
    rng = random.Random(5)
    rows = []
    for i in range(N):
        rows.append(
            {
                "user": f"u{rng.randrange(40)}",
                "ts": max(0, i * 5 - rng.randrange(300)),
                "amount": rng.randrange(1, 50),
            }
        )
    with EventLog(log_dir) as lg:
        lg.create_topic("in", 4)
        for t in ("tumbling", "sliding", "sessions", "totals"):
            lg.create_topic(t, 2)
        lg.append(
            "in",
            [Record(json.dumps(r).encode(), r["user"].encode(), r["ts"]) for r in rows],
        )
    return rows


def _flow(log_dir: Path) -> Dataflow:
    flow = Dataflow("rescale")
    events = flow.source(
        EventLogSource(log_dir, "in", decode=json.loads),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=1)),
        name="in",
    )
    keyed = events.key_by(lambda e: e["user"])
    amount = keyed.map(lambda e: (e["user"], e["amount"]), name="pairs").key_by(lambda p: p[0])
    for name, assigner in (
        ("tumbling", TumblingWindows(size=timedelta(seconds=2))),
        ("sliding", SlidingWindows(size=timedelta(seconds=3), slide=timedelta(seconds=1))),
        ("sessions", SessionWindows(gap=timedelta(milliseconds=400))),
    ):
        amount.window(assigner).reduce(lambda a, b: (a[0], a[1] + b[1]), name=name).map(
            lambda r: [r.key, r.start_ms, r.end_ms, r.value[1]], name=f"{name}.rec"
        ).sink(EventLogSink(log_dir, name), name=f"{name}.sink")
    keyed.process(RunningTotal(), name="totals").sink(
        EventLogSink(log_dir, "totals"), name="totals.sink"
    )
    return flow


def _read(log_dir: Path, topic: str) -> Counter:
    out: Counter = Counter()
    with EventLog(log_dir) as lg:
        for p in range(lg.partition_count(topic)):
            for r in lg.read(topic, p, 0, max_records=1_000_000, max_bytes=1 << 30):
                out[json.dumps(json.loads(r.value))] += 1  # type: ignore[arg-type]
    return out


def _run(
    log_dir: Path,
    chk: Path,
    parallelism: int,
    restore: str | None,
    stop_after: int | None,
    backend: StateBackend | None = None,
):
    stop = threading.Event()
    run = CheckpointedRun(
        _flow(log_dir).graph,
        parallelism,
        128,
        CheckpointConfig(storage=str(chk), interval=timedelta(milliseconds=50)),
        restore=restore,
        options=RuntimeOptions(source_batch_size=64, state_backend=backend or MemoryStateBackend()),
        clock=wall_clock_ms,
        sleep=time.sleep,
        stop=stop,
    )
    if stop_after is not None:

        def hook(scheduler):  # type: ignore[no-untyped-def]
            def maybe_stop(now: int) -> bool:
                if scheduler.rounds >= stop_after:
                    stop.set()
                return False

            scheduler.hooks.before_round.append(maybe_stop)

        run.scheduler_hook = hook
    return run.run()


@pytest.mark.parametrize("kind", STATE_BACKENDS)
@pytest.mark.parametrize(("before", "after"), [(1, 3), (4, 2), (2, 2), (1, 2)])
def test_restore_at_another_parallelism_equals_a_straight_run(
    tmp_path: Path, rocksdb_root: Path, before: int, after: int, kind: str
) -> None:
    """Scenario: stop at parallelism `before` (final checkpoint), resume at `after`: exact."""
    straight_log = tmp_path / "straight"
    _input(straight_log)
    _run(straight_log, tmp_path / "chk-straight", 1, None, None)

    log = tmp_path / "log"
    _input(log)
    first_backend, second_backend = (make_state_backend(kind, rocksdb_root, 1 << 16) for _ in "12")
    first = _run(log, tmp_path / "chk", before, None, stop_after=40, backend=first_backend)
    assert first.operators["in"].records_in < N, "the first run must stop before the end"
    second = _run(log, tmp_path / "chk", after, "latest", None, backend=second_backend)
    assert second.checkpoints_completed >= 1
    _expect_same_output(straight_log, log)


def _expect_same_output(straight_log: Path, log: Path) -> None:
    for topic in ("tumbling", "sliding", "sessions", "totals"):
        want, got = _read(straight_log, topic), _read(log, topic)
        assert sum(want.values()) > 0
        assert got == want, f"{topic}: missing {want - got}, extra {got - want}"


@pytest.mark.parametrize("middle", ["memory", "rocksdb"])
def test_rescale_2_3_1_from_rocksdb_checkpoints_and_across_backends(
    tmp_path: Path, rocksdb_root: Path, middle: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: RocksDB at 2, stop; resume on `middle` at 3 from the RocksDB checkpoint
    files, stop; resume on RocksDB at 1 from the middle's checkpoint, to the end: exact.
    RocksDB into RocksDB at another parallelism ingests SST files, timers included."""
    straight_log = tmp_path / "straight"
    _input(straight_log)
    _run(straight_log, tmp_path / "chk-straight", 1, None, None)

    log, chk = tmp_path / "log", tmp_path / "chk"
    _input(log)
    # a cache of 256 entries: evictions happen, and the job runs in seconds
    first, second, third = (
        make_state_backend(kind, rocksdb_root, 1 << 16) for kind in ("rocksdb", middle, "rocksdb")
    )
    leg1 = _run(log, chk, 2, None, stop_after=30, backend=first)
    with caplog.at_level(logging.INFO, logger="weirflow.state"):
        leg2 = _run(log, chk, 3, "latest", stop_after=30, backend=second)
        assert leg1.operators["in"].records_in + leg2.operators["in"].records_in < N
        leg3 = _run(log, chk, 1, "latest", None, backend=third)
    assert leg3.checkpoints_completed >= 1
    ingested = [r for r in caplog.records if "ingested" in r.getMessage()]
    # 3 + 1 subtasks of the three window operators and the totals restored from RocksDB files
    assert len(ingested) == (16 if middle == "rocksdb" else 0)
    if middle == "rocksdb":
        assert any(", 0 timers" not in r.getMessage() for r in ingested)
        # 2 -> 3: subtasks 0 and 2 take two thirds of an old subtask's key groups; 3 -> 1: all
        opened = [r for r in ingested if "opened a base checkpoint" in r.getMessage()]
        assert len(opened) == 4 * 2 + 4, [r.getMessage() for r in ingested]
    _expect_same_output(straight_log, log)
