"""``--startup-ramp``: a restored job's sources read slowly at first and reach full rate.

The test's source records when its reader was created (no later than the ramp's
start) and, per poll, when it returned, how many records the ramp let it ask
for, and how many it read. The ramp's allowance up to ``x`` seconds after its
start is the integral of its rate; records read by then can only be fewer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from weirflow import CheckpointConfig, Dataflow
from weirflow.connectors import CollectSink, IterableSource, SourceBatch, SourceReader
from weirflow.connectors.ramped import ReaderProxy
from weirflow.runtime import RuntimeOptions

RAMP_S = 1.0
START_RATE = 50
BATCH = 256
STEPS = 10


class _Recording:
    """An IterableSource whose reader reports its polls (test instrument)."""

    bounded = True

    def __init__(self, rows: list[int], polls: list[tuple[float, int, int]]) -> None:
        self.inner = IterableSource(rows)
        self.polls = polls
        self.created: list[float] = []

    def list_splits(self) -> list[str]:
        return self.inner.list_splits()

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> SourceReader:
        self.created.append(time.monotonic())
        return _RecordingReader(self.inner.create_reader(splits, positions), self.polls)


class _RecordingReader(ReaderProxy):
    def __init__(self, reader: SourceReader, polls: list[tuple[float, int, int]]) -> None:
        super().__init__(reader)
        self.polls = polls

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        batch = self.reader.poll(max_records, order)
        self.polls.append((time.monotonic(), max_records, len(batch.values) if batch else 0))
        return batch


def _flow(source: _Recording, name: str = "ramped") -> Dataflow:
    flow = Dataflow(name)
    flow.source(source, name="src").sink(CollectSink())
    return flow


def _allowance(x: float) -> float:
    """Records the ramp allows in its first ``x`` seconds: the integral of its rate
    ``START_RATE * 2 ** (10 x / RAMP_S)``, computed here independently of the ramp."""
    x = min(x, RAMP_S)
    k = STEPS * math.log(2) / RAMP_S
    return START_RATE * (math.exp(k * x) - 1) / k


def test_a_restored_job_reads_slowly_at_first_and_reaches_full_rate(tmp_path: Path) -> None:
    """Scenario: a job runs 100 records and checkpoints; it is restored over 20 000 more
    with a 1 s ramp from 50 records/s. Per tenth of the ramp, the records read stay within
    the ramp's allowance, the later tenths read more than the first, and after the ramp
    the reader asks for full batches."""
    config = CheckpointConfig(storage=str(tmp_path), interval=timedelta(minutes=10))
    first_polls: list[tuple[float, int, int]] = []
    options = RuntimeOptions(source_batch_size=BATCH, startup_ramp_s=RAMP_S, ramp_start_rate=50)
    _flow(_Recording(list(range(100)), first_polls)).run(checkpoint=config, runtime=options)
    assert {asked for _, asked, _ in first_polls} == {BATCH}, "a fresh start does not ramp"

    polls: list[tuple[float, int, int]] = []
    source = _Recording(list(range(20_100)), polls)
    result = _flow(source).run(checkpoint=config, restore="latest", runtime=options)
    assert result.operators["src"].records_in == 20_000
    origin = source.created[0]
    steps = [0] * (STEPS + 1)  # the ten ramp steps, then everything after the ramp
    read = 0
    for t, _, n in polls:
        x = t - origin
        read += n
        assert read <= _allowance(x) + 1 or x >= RAMP_S, (x, read, _allowance(x))
        steps[min(int(x / (RAMP_S / STEPS)), STEPS)] += n
    assert steps[STEPS - 1] >= 4 * max(steps[0], 1), steps
    assert polls[0][1] < BATCH, "the first poll was not limited"
    assert steps[STEPS] >= 20_000 - _allowance(RAMP_S) - 1, "the ramp let more through"
    # full rate: the ~12 600 records left after the ramp take some 50 polls; the last
    # ten of them, well past the ramp, ask for full batches
    assert {asked for _, asked, _ in polls[-10:]} == {BATCH}


JOB = """
import os, time
from weirflow import Dataflow
from weirflow.connectors import CollectSink, IterableSource
from weirflow.connectors.ramped import ReaderProxy


class Polls(ReaderProxy):
    def poll(self, max_records, order=None):
        batch = self.reader.poll(max_records, order)
        with open(os.environ["WF_POLLS"], "a") as f:
            f.write(f"{max_records}\\n")
        return batch


class Source:
    bounded = True

    def __init__(self):
        self.inner = IterableSource(list(range(int(os.environ["WF_ROWS"]))))

    def list_splits(self):
        return self.inner.list_splits()

    def create_reader(self, splits, positions):
        return Polls(self.inner.create_reader(splits, positions))


flow = Dataflow("ramped_workers")
flow.source(Source(), name="src").sink(CollectSink())
"""


def test_the_ramp_reaches_the_worker_processes(tmp_path: Path, monkeypatch: Any) -> None:
    """Scenario: the same restore on two worker processes: the restored reader, in a
    worker, asks for small batches first and full ones once the ramp is over."""
    from weirflow.runtime.run import run_job

    job = tmp_path / "ramp_job.py"
    job.write_text(JOB)
    polls = tmp_path / "polls.txt"
    monkeypatch.setenv("WF_POLLS", str(polls))
    config = CheckpointConfig(storage=str(tmp_path / "cp"), interval=timedelta(minutes=10))
    options = RuntimeOptions(source_batch_size=BATCH, startup_ramp_s=0.5, ramp_start_rate=50)
    graph = _flow(_Recording([], []), "ramped_workers").graph
    for rows, restore in ((100, None), (5_100, "latest")):
        monkeypatch.setenv("WF_ROWS", str(rows))
        polls.write_text("")
        run_job(
            graph,
            2,
            128,
            workers=2,
            job=f"{job}:flow",
            checkpoint=config,
            restore=restore,
            runtime=options,
        )
    asks = [int(line) for line in polls.read_text().split()]
    assert asks[0] < BATCH, "the restored reader in the worker was not ramped"
    assert asks[-1] == BATCH
