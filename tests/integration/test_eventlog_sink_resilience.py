"""EventLogSink behind the shared guard: another process holds the log's write lock, and
lets it go."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from breakers import heal_once_open
from weirflow.connectors import CircuitBreaker, EventLogSink, Resilience
from weirflow.eventlog import EventLog
from weirflow.retry import RetryPolicy

#: Holds the write lock of the SQLite file argv[1] until its standard input closes.
_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def committed(log_dir: Path, topic: str) -> list[bytes]:
    with EventLog(log_dir) as lg:
        return [r.value for r in lg.read(topic, 0, 0, max_records=1000)]


def test_a_locked_log_opens_the_breaker_and_the_sink_resumes_exactly_once(tmp_path: Path) -> None:
    """Scenario: checkpoint 1 commits; then another process holds the log's write lock. The
    sink's next calls overrun their call timeout (LogBusyError), are retried, and the breaker
    opens (no error reaches the task); once the lock is let go the writes, the pre-commit and
    the commit of checkpoint 2 go through, and every record is in the topic once."""
    with EventLog(tmp_path) as lg:
        lg.create_topic("out", 1)
        db_path = lg.db_path
    resilience = Resilience(
        retry=RetryPolicy(
            max_attempts=200,
            initial_backoff=timedelta(milliseconds=20),
            max_backoff=timedelta(milliseconds=200),
        ),
        call_timeout=timedelta(milliseconds=200),
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=timedelta(milliseconds=300)),
    )
    writer = EventLogSink(tmp_path, "out", resilience=resilience).create_writer(
        "job", "out", 0, 1, None
    )
    writer.write([b"a", b"b"], None)
    writer.pre_commit(1)
    writer.commit(1)

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert holder.stdin is not None
        thaw, seen = heal_once_open(writer.connector_stats, holder.stdin.close)
        writer.write([b"c", b"d", b"e"], None)
        writer.pre_commit(2)
        writer.commit(2)
        thaw.join()
    finally:
        holder.kill()
        holder.wait()

    assert "open" in seen, f"the breaker never opened: {seen[-5:]}"
    stats = writer.connector_stats()
    assert stats is not None and stats.retries.get("LogBusyError", 0) >= 1, stats
    assert stats.breaker == "closed", stats
    writer.close()
    assert committed(tmp_path, "out") == [b"a", b"b", b"c", b"d", b"e"]
