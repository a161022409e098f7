"""Every Nexmark query equals its plain batch computation: straight through, at parallelism 2
with checkpoints, and stopped at a checkpoint then restored from it."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from weirflow import CheckpointConfig, Dataflow, WatermarkStrategy
from weirflow.connectors import CollectSink, NexmarkSource
from weirflow.connectors.nexmark import NexmarkGenerator
from weirflow.runtime import RunListener, RuntimeOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "nexmark"))

import queries
import reference

EVENTS = 24_000  # 2.4 s of event time: several q5/q7/q8 windows, q11 sessions that split
QUERY_NAMES = list(queries.QUERIES)


@pytest.fixture(scope="module")
def expected() -> dict[str, list[Any]]:
    events = NexmarkGenerator().events(0, 1, EVENTS)
    return {q: reference.REFERENCES[q](events) for q in QUERY_NAMES}


def build(query: str, splits: int, sink: CollectSink, job: str = "nexmark") -> Dataflow:
    flow = Dataflow(f"{job}_{query}")
    stream = flow.source(
        NexmarkSource(EVENTS, splits=splits),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=4)),
    )
    queries.QUERIES[query](stream).sink(sink)
    return flow


def test_the_small_run_exercises_every_query(expected: dict[str, list[Any]]) -> None:
    assert all(expected[q] for q in QUERY_NAMES)
    assert len({r[0] for r in expected["q5"]}) >= 5  # several sliding windows
    assert max(r[1] for r in expected["q11"]) > 1


@pytest.mark.parametrize("query", QUERY_NAMES)
def test_straight_through_at_parallelism_1(query: str, expected: dict[str, list[Any]]) -> None:
    sink = CollectSink()
    build(query, 1, sink).run(parallelism=1)
    assert reference.final(query, sink.results) == expected[query]


@pytest.mark.parametrize("query", QUERY_NAMES)
def test_parallelism_2_with_three_splits_and_checkpoints(
    query: str, expected: dict[str, list[Any]], tmp_path: Path
) -> None:
    sink = CollectSink()
    result = build(query, 3, sink).run(
        parallelism=2,
        checkpoint=CheckpointConfig(storage=str(tmp_path), interval=timedelta(milliseconds=20)),
        runtime=RuntimeOptions(source_batch_size=200),
    )
    assert reference.final(query, sink.results) == expected[query]
    assert result.checkpoints_completed >= 1


class StopAfterRounds(RunListener):
    """Asks the run to stop (with a final checkpoint) after a number of scheduler rounds."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.stop = threading.Event()

    def attempt_running(self, scheduler: Any, coordinator: Any) -> None:
        def hook(now_ms: int) -> bool:
            if scheduler.rounds >= self.rounds:
                self.stop.set()
            return False

        scheduler.hooks.before_round.append(hook)


@pytest.mark.parametrize("query", QUERY_NAMES)
def test_stop_at_a_checkpoint_and_restore_gives_the_same_answer(
    query: str, expected: dict[str, list[Any]], tmp_path: Path
) -> None:
    """Scenario: the job stops with a checkpoint mid-stream and a new run restores from it."""
    config = CheckpointConfig(storage=str(tmp_path), interval=timedelta(hours=1))
    options = RuntimeOptions(source_batch_size=100)
    sink = CollectSink()
    listener = StopAfterRounds(60)
    first = build(query, 2, sink, job="restore").run(
        parallelism=2,
        checkpoint=config,
        runtime=options,
        stop=listener.stop,
        listener=listener,
    )
    assert listener.stop.is_set() and first.checkpoints_completed == 1
    emitted_before = len(sink.results)
    build(query, 2, sink, job="restore").run(
        parallelism=2, checkpoint=config, runtime=options, restore="latest"
    )
    assert reference.final(query, sink.results) == expected[query]
    if query in ("q0", "q1"):
        assert 0 < emitted_before < len(sink.results)
