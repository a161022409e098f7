"""The event log against a simple in-memory model (hypothesis stateful testing).

The model is a list of ``(value, append_ms)`` per partition with a start
offset, the transactions' staged records in staging order, and each
transactional id's epoch. Rules append, read at both isolation levels, run
transactions (commit, abort, prepare then commit or abort from a fresh
``EventLog`` instance), fence producers, call zombies, move the clock and
apply retention by age and size.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from weirflow.eventlog import (
    EventLog,
    ProducerFencedError,
    Record,
    TransactionalProducer,
    TransactionHandle,
)

TOPIC = "t"
PARTITIONS = 2
RETENTION_MS = 60
RETENTION_BYTES = 120
TIDS = ("sink-a", "sink-b")

values = st.binary(max_size=10)
batches = st.lists(st.tuples(st.integers(0, PARTITIONS - 1), values), min_size=1, max_size=6)


@dataclass
class ModelTxn:
    """A transaction in the model: its staged ``(staging_no, partition, value)``."""

    staged: list[tuple[int, int, bytes]] = field(default_factory=list)


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


class EventLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="weirflow-el-"))
        self.clock = Clock()
        self.log = EventLog(self.dir, "process", clock=self.clock)
        self.log.create_topic(
            TOPIC, PARTITIONS, retention_ms=RETENTION_MS, retention_bytes=RETENTION_BYTES
        )
        self.parts: list[list[tuple[bytes, int]]] = [[] for _ in range(PARTITIONS)]
        self.starts = [0] * PARTITIONS
        self.staging_no = 0
        self.producers: dict[str, TransactionalProducer] = {}
        self.open: dict[str, ModelTxn] = {}
        self.prepared: dict[TransactionHandle, ModelTxn] = {}
        self.committed: list[TransactionHandle] = []
        self.aborted: list[TransactionHandle] = []
        self.zombies: list[TransactionalProducer] = []

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def end(self, p: int) -> int:
        return self.starts[p] + len(self.parts[p])

    def staged_of(self, p: int) -> list[bytes]:
        txns = list(self.open.values()) + list(self.prepared.values())
        rows = sorted(row for t in txns for row in t.staged if row[1] == p)
        return [v for _, _, v in rows]

    def commit_model(self, txn: ModelTxn) -> None:
        for _, p, v in sorted(txn.staged):
            self.parts[p].append((v, self.clock.now_ms))

    def stage(self, txn: ModelTxn, batch: list[tuple[int, bytes]]) -> None:
        for p, v in batch:
            txn.staged.append((self.staging_no, p, v))
            self.staging_no += 1

    @rule(batch=batches)
    def append(self, batch: list[tuple[int, bytes]]) -> None:
        expected = []
        for p, v in batch:
            expected.append((p, self.end(p)))
            self.parts[p].append((v, self.clock.now_ms))
        assert self.log.append(TOPIC, [Record(v, partition=p) for p, v in batch]) == expected

    @rule(
        p=st.integers(0, PARTITIONS - 1),
        data=st.data(),
        max_records=st.integers(1, 8),
        max_bytes=st.integers(0, 40),
    )
    def read_committed(self, p: int, data: st.DataObject, max_records: int, max_bytes: int) -> None:
        frm = data.draw(st.integers(self.starts[p], self.end(p)))
        got = self.log.read(TOPIC, p, frm, max_records=max_records, max_bytes=max_bytes)
        want, used = [], 0
        for v, _ in self.parts[p][frm - self.starts[p] :][:max_records]:
            if want and used + len(v) > max_bytes:
                break
            want.append(v)
            used += len(v)
        assert [(r.offset, r.value) for r in got] == [(frm + i, v) for i, v in enumerate(want)]

    @rule(p=st.integers(0, PARTITIONS - 1), data=st.data())
    def read_uncommitted(self, p: int, data: st.DataObject) -> None:
        view = [v for v, _ in self.parts[p]] + self.staged_of(p)
        frm = data.draw(st.integers(self.starts[p], self.starts[p] + len(view)))
        got = self.log.read(TOPIC, p, frm, max_records=100, isolation="read_uncommitted")
        assert [r.value for r in got] == view[frm - self.starts[p] :]
        assert [r.offset for r in got] == list(range(frm, frm + len(got)))
        assert self.log.end_offset(TOPIC, p, "read_uncommitted") == self.starts[p] + len(view)

    @rule(tid=st.sampled_from(TIDS))
    def register(self, tid: str) -> None:
        old = self.producers.get(tid)
        self.producers[tid] = self.log.transactional_producer(tid)
        if old is not None:
            assert self.producers[tid].epoch == old.epoch + 1
            self.zombies.append(old)
        self.open.pop(tid, None)

    @rule(tid=st.sampled_from(TIDS))
    def begin(self, tid: str) -> None:
        if tid not in self.producers or tid in self.open:
            return
        self.producers[tid].begin()
        self.open[tid] = ModelTxn()

    @rule(tid=st.sampled_from(TIDS), batch=batches)
    def txn_append(self, tid: str, batch: list[tuple[int, bytes]]) -> None:
        if tid not in self.open:
            return
        self.producers[tid].append(TOPIC, [Record(v, partition=p) for p, v in batch])
        self.stage(self.open[tid], batch)

    @rule(tid=st.sampled_from(TIDS))
    def commit(self, tid: str) -> None:
        if tid not in self.open:
            return
        self.producers[tid].commit()
        self.commit_model(self.open.pop(tid))

    @rule(tid=st.sampled_from(TIDS))
    def abort(self, tid: str) -> None:
        if tid not in self.open:
            return
        self.producers[tid].abort()
        del self.open[tid]

    @rule(tid=st.sampled_from(TIDS))
    def prepare(self, tid: str) -> None:
        if tid not in self.open:
            return
        handle = self.producers[tid].prepare()
        self.prepared[handle] = self.open.pop(tid)
        assert self.log.list_prepared(tid) == sorted(
            (h for h in self.prepared if h.transactional_id == tid), key=lambda h: h.sequence
        )

    @precondition(lambda self: self.prepared)
    @rule(data=st.data(), commit=st.booleans(), fresh=st.booleans())
    def resolve_prepared(self, data: st.DataObject, commit: bool, fresh: bool) -> None:
        handle = data.draw(st.sampled_from(sorted(self.prepared, key=lambda h: h.sequence)))
        other = EventLog(self.dir, "process", clock=self.clock) if fresh else self.log
        try:
            if commit:
                other.commit_prepared(handle)
                other.commit_prepared(handle)
                self.commit_model(self.prepared.pop(handle))
                self.committed.append(handle)
            else:
                other.abort_prepared(handle)
                other.abort_prepared(handle)
                del self.prepared[handle]
                self.aborted.append(handle)
        finally:
            if fresh:
                other.close()

    @precondition(lambda self: self.committed)
    @rule(data=st.data())
    def recommit_is_a_no_op(self, data: st.DataObject) -> None:
        self.log.commit_prepared(data.draw(st.sampled_from(self.committed)))

    @precondition(lambda self: self.zombies)
    @rule(data=st.data(), batch=batches)
    def zombie_is_fenced(self, data: st.DataObject, batch: list[tuple[int, bytes]]) -> None:
        zombie = data.draw(st.sampled_from(self.zombies))
        with pytest.raises(ProducerFencedError):
            zombie.begin()
            zombie.append(TOPIC, [Record(v, partition=p) for p, v in batch])
            zombie.commit()

    @rule(ms=st.sampled_from([0, 1, 10, 30, RETENTION_MS]))
    def tick(self, ms: int) -> None:
        self.clock.now_ms += ms

    @rule()
    def retention(self) -> None:
        removed = 0
        for p in range(PARTITIONS):
            recs = self.parts[p]
            age_cut = next(
                (i for i, (_, t) in enumerate(recs) if t >= self.clock.now_ms - RETENTION_MS),
                len(recs),
            )
            size_cut, total = len(recs), 0
            for i in range(len(recs) - 1, -1, -1):
                total += len(recs[i][0])
                if total > RETENTION_BYTES:
                    break
                size_cut = i
            cut = max(age_cut, size_cut)
            self.parts[p] = recs[cut:]
            self.starts[p] += cut
            removed += cut
        assert self.log.apply_retention() == removed

    @invariant()
    def offsets_and_sizes_match(self) -> None:
        d = self.log.describe(TOPIC)
        for p, desc in enumerate(d.partitions):
            assert (desc.start_offset, desc.end_offset) == (self.starts[p], self.end(p))
            assert desc.bytes == sum(len(v) for v, _ in self.parts[p])


EventLogMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_eventlog_against_model = EventLogMachine.TestCase
