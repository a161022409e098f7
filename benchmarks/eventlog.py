"""Append and read throughput of the event log, next to a plain sqlite3 loop on the same schema.

Both sides write 100-byte values in batches of 1,000 records, one SQLite
transaction per batch, with the same pragmas (WAL, the same ``synchronous``
level), and read them back in batches of 1,000. The plain loop is what a
careful hand-written ``executemany`` program would do on the same tables;
the ratio says how much the log's own Python work costs. The target is a
ratio of at least 70% for append and for read.

Usage: python benchmarks/eventlog.py [--records N] [--quick] [--durability fsync|process]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from weirflow.eventlog import DB_FILE, EventLog, Record

VALUE_BYTES = 100
BATCH = 1_000
TOPIC = "bench"
_INSERT = (
    "INSERT INTO records(topic_id, part, off, key, value, timestamp_ms, headers, append_ms, "
    "pos_end) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT off, key, value, timestamp_ms, headers, pos_end FROM records "
    "WHERE topic_id = ? AND part = ? AND off >= ? AND off < ? ORDER BY off"
)


def _values(n: int) -> list[bytes]:
    return [(b"%012d" % i).ljust(VALUE_BYTES, b"x") for i in range(n)]


def _fresh_log(root: Path, name: str, durability: str) -> EventLog:
    log = EventLog(root / name, durability)  # type: ignore[arg-type]
    log.create_topic(TOPIC, 1)
    return log


def bench_weirflow(root: Path, values: list[bytes], durability: str) -> tuple[float, float]:
    """Return (append seconds, read seconds) through ``EventLog``."""
    batches = [
        [Record(v, timestamp_ms=i) for i, v in enumerate(values[s : s + BATCH], s)]
        for s in range(0, len(values), BATCH)
    ]
    with _fresh_log(root, "weirflow", durability) as log:
        t0 = time.perf_counter()
        for batch in batches:
            log.append(TOPIC, batch)
        t1 = time.perf_counter()
        offset, end, got = 0, log.end_offset(TOPIC, 0), 0
        while offset < end:
            recs = log.read(TOPIC, 0, offset, BATCH, 1 << 30)
            offset = recs[-1].offset + 1
            got += len(recs)
        t2 = time.perf_counter()
    assert got == len(values)
    return t1 - t0, t2 - t1


def bench_plain(root: Path, values: list[bytes], durability: str) -> tuple[float, float]:
    """Return (append seconds, read seconds) of a plain sqlite3 loop on the log's schema."""
    _fresh_log(root, "plain", durability).close()
    conn = sqlite3.connect(root / "plain" / DB_FILE, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
    batches = [values[s : s + BATCH] for s in range(0, len(values), BATCH)]
    (topic_id,) = conn.execute("SELECT topic_id FROM topics WHERE name = ?", (TOPIC,)).fetchone()
    now = time.time_ns() // 1_000_000
    t0 = time.perf_counter()
    offset = pos = 0
    for batch in batches:
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for v in batch:
            pos += len(v)
            rows.append((topic_id, 0, offset, None, v, offset, None, now, pos))
            offset += 1
        conn.executemany(_INSERT, rows)
        conn.execute(
            "UPDATE partitions SET next_offset = ?, end_pos = ? WHERE topic_id = ? AND part = 0",
            (offset, pos, topic_id),
        )
        conn.execute("COMMIT")
    t1 = time.perf_counter()
    got = 0
    for start in range(0, offset, BATCH):
        got += len(conn.execute(_SELECT, (topic_id, 0, start, start + BATCH)).fetchall())
    t2 = time.perf_counter()
    conn.close()
    assert got == len(values)
    return t1 - t0, t2 - t1


def _best(
    fn: Callable[[Path, list[bytes], str], tuple[float, float]],
    values: list[bytes],
    durability: str,
    rounds: int,
) -> tuple[float, float]:
    results = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="weirflow-bench-") as tmp:
            results.append(fn(Path(tmp), values, durability))
    return min(r[0] for r in results), min(r[1] for r in results)


def main() -> int:
    """Run the benchmark and print a table; return the exit status (0)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records per run")
    parser.add_argument("--quick", action="store_true", help="20,000 records, one round")
    parser.add_argument("--durability", choices=["fsync", "process"], default="process")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.records
    rounds = 1 if args.quick else 3
    values = _values(n)
    plain = _best(bench_plain, values, args.durability, rounds)
    ours = _best(bench_weirflow, values, args.durability, rounds)
    mb = n * VALUE_BYTES / 1e6
    table = Table(
        title=f"event log: {n:,} records of {VALUE_BYTES} B, batches of {BATCH:,}, "
        f"durability={args.durability}, best of {rounds}"
    )
    for col in ("operation", "weirflow rec/s", "weirflow MB/s", "plain rec/s", "plain MB/s"):
        table.add_column(col, justify="right")
    table.add_column("ratio", justify="right")
    for i, op in enumerate(("append", "read")):
        table.add_row(
            op,
            f"{n / ours[i]:,.0f}",
            f"{mb / ours[i]:,.1f}",
            f"{n / plain[i]:,.0f}",
            f"{mb / plain[i]:,.1f}",
            f"{plain[i] / ours[i]:.0%}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
