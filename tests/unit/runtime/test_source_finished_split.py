"""A split that reports itself finished together with its last batch releases its watermark
only after that batch is emitted (regression: the batch used to arrive late)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import CollectSink, SourceBatch
from weirflow.windows import TumblingWindows

SCRIPT = [
    ("A", list(range(0, 10)), False),
    ("B", [100_000], True),
    ("A", list(range(10, 20)), True),  # A's last records, and A is finished in the same poll
]


class _Reader:
    def __init__(self) -> None:
        self.step = 0
        self.newly_finished: list[str] = []

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        if self.step >= len(SCRIPT):
            return None
        split, ts, done = SCRIPT[self.step]
        self.step += 1
        if done:
            self.newly_finished.append(split)
        return SourceBatch(split, [("k", t) for t in ts], list(ts))

    def finished(self) -> bool:
        return self.step >= len(SCRIPT)

    def positions(self) -> dict[str, Any]:
        return {"step": self.step}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        return None

    def close(self) -> None:
        return None


class _Source:
    bounded = True

    def list_splits(self) -> list[str]:
        return ["A", "B"]

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> _Reader:
        return _Reader()


def test_last_batch_of_a_finishing_split_is_not_late() -> None:
    flow = Dataflow("finishing")
    windows = (
        flow.source(_Source(), watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(0)))
        .key_by(lambda r: r[0])
        .window(TumblingWindows(size=timedelta(seconds=10)))
        .count()
    )
    out, late = CollectSink(), CollectSink()
    windows.sink(out)
    windows.late_records().sink(late)
    flow.run(1)
    assert late.results == []
    assert sorted((r.start_ms, r.value) for r in out.results) == [(0, 20), (100_000, 1)]
