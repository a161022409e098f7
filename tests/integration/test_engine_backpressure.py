"""Backpressure: an unbounded source feeding a slow sink stays within the channels' bound.

The local scheduler is driven with an injected clock and stopped after a
fixed number of rounds by a hook that checks, before every round:

* records buffered (in channels and in writers waiting for credit) never
  exceed ``channel_capacity × buffer_size × channels + one source batch per
  source task`` (a task takes no new input while its output waits for credit);
* the source's read position is never ahead of what the sink has written by
  more than that bound, and the difference is exactly what is buffered
  (nothing dropped, nothing duplicated).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from weirflow import Dataflow
from weirflow.connectors import SourceBatch
from weirflow.runtime import LocalScheduler, RuntimeOptions, run_unchecked

ROUNDS = 400


class ManualClock:
    """Processing time in ms that only the test (and the slow sink's sleep) moves."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        self.now_ms += round(seconds * 1000)


class _CountingReader:
    def __init__(self, source: EndlessSource, has_split: bool) -> None:
        self._source = source
        self._has_split = has_split

    def poll(self, max_records: int) -> SourceBatch | None:
        if not self._has_split:
            return None
        start = self._source.read
        self._source.read += max_records
        return SourceBatch("0", list(range(start, start + max_records)), None)

    def finished(self) -> bool:
        return False

    def positions(self) -> dict[str, Any]:
        return {"0": self._source.read}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        return None

    def close(self) -> None:
        return None


class EndlessSource:
    """Unbounded, one split: ``0, 1, 2, …``, as fast as it is polled; counts records read."""

    bounded = False

    def __init__(self) -> None:
        self.read = 0

    def list_splits(self) -> list[str]:
        return ["0"]

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> _CountingReader:
        return _CountingReader(self, bool(splits))


class _SlowWriter:
    def __init__(self, sink: SlowSink) -> None:
        self._sink = sink

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        # 1 ms of processing time per record: the sink is the slow end of the job
        self._sink.sleep(len(values) / 1000)
        self._sink.written.extend(values)

    def pre_commit(self, checkpoint_id: int) -> None:
        return None

    def commit(self, checkpoint_id: int) -> None:
        return None

    def finish(self) -> None:
        return None

    def close(self) -> None:
        return None


class SlowSink:
    """Collects records, spending processing time on the injected clock for each."""

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self.sleep = sleep
        self.written: list[int] = []

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> _SlowWriter:
        return _SlowWriter(self)


@pytest.mark.parametrize("edge", ["rebalance", "key_by"])
def test_buffered_records_stay_within_the_channel_bound(edge: str) -> None:
    """Scenario: an endless source outpaces a slow sink for 400 scheduler rounds.

    The source offers 50 records a step; each sink subtask takes at most 4 buffers of
    4 records a step (and spends 1 ms of processing time per record).
    """
    parallelism = 2
    options = RuntimeOptions(source_batch_size=50, buffer_size=4, channel_capacity=3)
    clock = ManualClock()
    source = EndlessSource()
    sink = SlowSink(clock.sleep)
    flow = Dataflow("backpressure")
    stream = flow.source(source).map(lambda v: v * 2)
    shuffled = stream.rebalance() if edge == "rebalance" else stream.key_by(lambda v: v % 7)
    shuffled.sink(sink)

    observed: list[tuple[int, int, int]] = []
    holder: dict[str, LocalScheduler] = {}

    def check(now_ms: int) -> bool:
        scheduler = holder["scheduler"]
        buffered = scheduler.buffered_records()
        observed.append((source.read, len(sink.written), buffered))
        clock.now_ms += 1
        return len(observed) > ROUNDS

    def install(scheduler: LocalScheduler) -> None:
        holder["scheduler"] = scheduler
        scheduler.hooks.before_round.append(check)

    run_unchecked(
        flow.graph,
        parallelism,
        128,
        options,
        clock=clock,
        sleep=clock.sleep,
        scheduler_hook=install,
    )

    scheduler = holder["scheduler"]
    channels = len(scheduler.channels)
    assert channels == parallelism * parallelism
    source_tasks = sum(1 for t in scheduler.tasks if t.is_source)
    bound = (
        options.channel_capacity * options.buffer_size * channels
        + options.source_batch_size * source_tasks
    )
    for read, written, buffered in observed:
        assert buffered <= bound
        assert read - written == buffered
        assert read - written <= bound
    # it ran for a while and the sink kept draining: progress in every stretch of 20 rounds
    assert len(observed) == ROUNDS + 1
    for earlier, later in zip(observed[20::20], observed[40::20], strict=False):
        assert later[1] > earlier[1]
    # the source was held back: it read far less than one batch per round
    assert source.read < ROUNDS * options.source_batch_size // 2
    assert any(t.backpressured_steps for t in scheduler.tasks if t.is_source)
    # what reached the sink is duplicate-free and was read
    assert len(set(sink.written)) == len(sink.written)
    assert all(v % 2 == 0 and v // 2 < source.read for v in sink.written)
