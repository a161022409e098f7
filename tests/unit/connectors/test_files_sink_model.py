"""FileSink against a model: random writes, checkpoints that complete or not, lost commit
notifications and crashes with restores at another parallelism. The committed part files must hold
exactly the records written before the last completed checkpoint's barrier (none twice)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow.connectors import FileSink
from weirflow.connectors.files import FileSinkWriter

Op = tuple[Any, ...]

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 3), st.integers(1, 5)),
        # (completes, notification delivered to each subtask)
        st.tuples(st.just("checkpoint"), st.booleans(), st.booleans()),
        st.tuples(st.just("crash"), st.integers(1, 4)),
    ),
    max_size=30,
)


class Job:
    """Drives FileSink writers the way the runtime does, and keeps the expected output."""

    def __init__(self, folder: Path, rolling: int | None, fmt: str) -> None:
        self.sink = FileSink(folder, format=fmt, rolling_records=rolling)  # type: ignore[arg-type]
        self.folder = folder
        self.parallelism = 2
        self.writers = self._open(None)
        self.next_id = 1
        self.last_completed = 0
        self.completed_states: dict[int, Any] | None = None
        self.counter = 0
        self.durable: list[int] = []
        self.since_barrier: list[int] = []
        self.before_barrier: list[int] = []

    def _open(self, states: dict[int, Any] | None) -> list[FileSinkWriter]:
        p = self.parallelism
        return [
            self.sink.create_writer(
                "job",
                "out",
                i,
                p,
                None if states is None else {j: s for j, s in states.items() if j % p == i},
            )
            for i in range(p)
        ]

    def write(self, subtask: int, n: int) -> None:
        values = list(range(self.counter, self.counter + n))
        self.counter += n
        self.writers[subtask % self.parallelism].write([{"n": v} for v in values], None)
        self.since_barrier.extend(values)

    def checkpoint(self, completes: bool, notified: bool) -> None:
        checkpoint_id = self.next_id
        self.next_id += 1
        states = {i: w.pre_commit(checkpoint_id) for i, w in enumerate(self.writers)}
        self.before_barrier.extend(self.since_barrier)
        self.since_barrier = []
        if not completes:
            return
        self.completed_states = states
        self.last_completed = checkpoint_id
        self.durable.extend(self.before_barrier)
        self.before_barrier = []
        if notified:
            for w in self.writers:
                w.commit(checkpoint_id)

    def crash(self, parallelism: int) -> None:
        for w in self.writers:
            w.close()
        self.since_barrier = []
        self.before_barrier = []
        self.parallelism = parallelism
        self.next_id = self.last_completed + 1
        self.writers = self._open(self.completed_states)

    def finish(self) -> None:
        self.checkpoint(True, True)
        for w in self.writers:
            w.close()


def committed(folder: Path, fmt: str) -> Counter[int]:
    out: Counter[int] = Counter()
    for name in os.listdir(folder):
        if name.startswith("."):
            continue
        lines = (folder / name).read_text().splitlines()
        if fmt == "csv":
            assert lines[0] == "n"
            out.update(int(line) for line in lines[1:])
        else:
            out.update(json.loads(line)["n"] for line in lines)
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@given(ops=ops_strategy, rolling=st.sampled_from([None, 1, 2, 3]))
@settings(max_examples=40, deadline=None)
def test_committed_parts_match_the_model(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, ops: list[Op], rolling: int | None
) -> None:
    folder = tmp_path_factory.mktemp("parts")
    job = Job(folder, rolling, fmt)
    for op in ops:
        getattr(job, op[0])(*op[1:])
    job.finish()
    assert committed(folder, fmt) == Counter(job.durable)
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []
