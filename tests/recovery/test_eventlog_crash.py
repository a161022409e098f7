"""The event log under SIGKILL: real child processes killed mid-append, mid-transaction,
mid-commit and after prepare; the survivors check what the log holds."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from weirflow.eventlog import EventLog, Record, TransactionHandle

pytestmark = pytest.mark.slow

LINE_TIMEOUT_S = 60

APPENDER = """
import sys
from weirflow.eventlog import EventLog, Record
log = EventLog(sys.argv[1], "process")
base, size = int(sys.argv[2]), int(sys.argv[3])
b = base
while True:
    log.append("t", [Record(b"%d:%d" % (b, i)) for i in range(size)])
    print(f"acked {b}", flush=True)
    b += 1
"""

TXN_OPEN = """
import sys, time
from weirflow.eventlog import EventLog, Record
log = EventLog(sys.argv[1], "process")
producer = log.transactional_producer("sink")
producer.begin()
for b in range(3):
    producer.append("t", [Record(b"txn:%d:%d" % (b, i)) for i in range(1000)])
print("staged", flush=True)
time.sleep(600)
"""

TXN_COMMIT = """
import sys
from weirflow.eventlog import EventLog, Record
log = EventLog(sys.argv[1], "process")
producer = log.transactional_producer("sink")
producer.begin()
producer.append("t", [Record(b"big:%d" % i) for i in range(int(sys.argv[2]))])
print("committing", flush=True)
producer.commit()
print("committed", flush=True)
"""

TXN_PREPARE = """
import json, sys, time
from weirflow.eventlog import EventLog, Record
log = EventLog(sys.argv[1], "process")
producer = log.transactional_producer("sink")
producer.begin()
producer.append("t", [Record(b"prepared:%d" % i) for i in range(1000)])
print("handle", json.dumps(producer.prepare().to_dict()), flush=True)
time.sleep(600)
"""

COMMITTER = """
import json, sys
from weirflow.eventlog import EventLog, TransactionHandle
log = EventLog(sys.argv[1], "process")
log.transactional_producer("sink")
log.commit_prepared(TransactionHandle.from_dict(json.loads(sys.argv[2])))
print("done", flush=True)
"""


class Child:
    """A Python child process whose stdout lines are read by a thread with bounded waits."""

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str) -> str:
        """Return the first line starting with ``prefix``; fail if the child ends first."""
        while True:
            line = self.lines.get(timeout=LINE_TIMEOUT_S)
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                pytest.fail(f"child ended before printing {prefix!r}: {err}")
            if line.startswith(prefix):
                return line

    def drain(self) -> list[str]:
        out = []
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                out.append(line)
        return out

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=LINE_TIMEOUT_S)
        assert self.proc.returncode == -signal.SIGKILL

    def finish(self) -> int:
        return self.proc.wait(timeout=LINE_TIMEOUT_S)


def _all_values(log: EventLog, topic: str = "t") -> list[bytes]:
    out: list[bytes] = []
    for p in range(log.partition_count(topic)):
        offset, end = log.start_offset(topic, p), log.end_offset(topic, p)
        while offset < end:
            batch = log.read(topic, p, offset, 5_000, 1 << 30)
            assert [r.offset for r in batch] == list(range(offset, offset + len(batch)))
            out.extend(r.value for r in batch if r.value is not None)
            offset += len(batch)
    return out


def test_sigkill_mid_batch_append_is_all_or_nothing(tmp_path: Path) -> None:
    """Scenario: appenders of 4,000-record batches are SIGKILLed at random moments, three times."""
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 3)
    size = 4_000
    acked: set[int] = set()
    for round_no in range(3):
        child = Child(APPENDER, str(tmp_path), str(round_no * 10_000), str(size))
        child.wait_for("acked")
        time.sleep((round_no + 1) * 0.007)
        child.kill()
        # a line the kill tore in two reports nothing
        acked.update(
            int(m[1]) for line in child.drain() if (m := re.fullmatch(r"acked (\d+)", line))
        )
        acked.add(round_no * 10_000)
    with EventLog(tmp_path, "process") as log:
        counts: dict[int, int] = {}
        for value in _all_values(log):
            batch = int(value.split(b":")[0])
            counts[batch] = counts.get(batch, 0) + 1
        assert acked <= set(counts)
        assert all(n == size for n in counts.values()), counts
        assert log.append("t", [Record(b"after")]) != []


def test_sigkill_with_an_open_transaction_shows_nothing(tmp_path: Path) -> None:
    """Scenario: a producer stages three batches in a transaction and is SIGKILLed before commit."""
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 2)
    child = Child(TXN_OPEN, str(tmp_path))
    child.wait_for("staged")
    child.kill()
    with EventLog(tmp_path, "process") as log:
        assert _all_values(log) == []
        assert sum(log.end_offset("t", p, "read_uncommitted") for p in range(2)) == 3_000
        producer = log.transactional_producer("sink")
        assert sum(log.end_offset("t", p, "read_uncommitted") for p in range(2)) == 0
        producer.begin()
        producer.append("t", [Record(b"restarted")])
        producer.commit()
        assert _all_values(log) == [b"restarted"]


def test_sigkill_during_commit_is_all_or_nothing(tmp_path: Path) -> None:
    """Scenario: a producer is SIGKILLed while committing a 100,000-record transaction."""
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 2)
    child = Child(TXN_COMMIT, str(tmp_path), "100000")
    child.wait_for("committing")
    child.kill()
    with EventLog(tmp_path, "process") as log:
        seen = len(_all_values(log))
        assert seen in (0, 100_000)
        log.transactional_producer("sink")
        assert len(_all_values(log)) == seen
        assert sum(log.end_offset("t", p, "read_uncommitted") for p in range(2)) == seen


def test_prepared_transaction_is_committed_once_by_a_new_process(tmp_path: Path) -> None:
    """Scenario: a producer prepares and is SIGKILLed; new processes commit the handle twice."""
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 1)
    child = Child(TXN_PREPARE, str(tmp_path))
    handle_json = child.wait_for("handle").split(" ", 1)[1]
    child.kill()
    with EventLog(tmp_path, "process") as log:
        assert _all_values(log) == []
        assert log.list_prepared("sink") == [TransactionHandle.from_dict(json.loads(handle_json))]
    for _ in range(2):
        committer = Child(COMMITTER, str(tmp_path), handle_json)
        committer.wait_for("done")
        assert committer.finish() == 0
    with EventLog(tmp_path, "process") as log:
        assert _all_values(log) == [b"prepared:%d" % i for i in range(1_000)]
        assert log.list_prepared("sink") == []
