"""``weirflow log quickstart``: a short guided tour of the embedded event log."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from weirflow.cli.log import (
    DEFAULT_LOG_DIR,
    LogDirOption,
    cli_errors,
    describe_table,
    lag_table,
    log_app,
    open_log,
)
from weirflow.eventlog import Record

_QUICK_EVENTS = "quickstart.clicks"
_QUICK_PAYMENTS = "quickstart.payments"
_QUICK_GROUP = "quickstart.readers"
_QUICK_TXN_ID = "quickstart.payments-writer"
# 2026-01-01T00:00:00Z: fixed event times make every run show the same data.
_QUICK_BASE_MS = 1_767_225_600_000


def _quick_events(n: int) -> list[Record]:
    pages = ("/", "/pricing", "/docs", "/signup", "/blog")
    out = []
    for i in range(n):
        user = f"user-{i % 7}"
        ts = _QUICK_BASE_MS + i * 1_000
        body = {"user": user, "page": pages[i % len(pages)], "ts": ts}
        out.append(Record(json.dumps(body).encode(), key=user.encode(), timestamp_ms=ts))
    return out


def _quick_payments(tag: str) -> list[Record]:
    return [
        Record(json.dumps({"payment": f"{tag}-{i}", "cents": 100 * (i + 1)}).encode())
        for i in range(3)
    ]


@log_app.command()
@cli_errors
def quickstart(ctx: typer.Context, log_dir: LogDirOption = None) -> None:
    """A short tour: topics, keyed appends, describe, transactions, consumer groups, lag."""
    c = Console()
    with open_log(ctx, log_dir, create=True) as log:
        c.rule("[bold]1. Topics")
        log.create_topic(_QUICK_EVENTS, 3, exist_ok=True)
        log.create_topic(_QUICK_PAYMENTS, 1, exist_ok=True)
        c.print(f"log directory [cyan]{log.path}[/]; topics: {', '.join(log.list_topics())}")

        c.rule("[bold]2. Append 300 JSON click events, keyed by user")
        placed = log.append(_QUICK_EVENTS, _quick_events(300))
        c.print(
            f"appended {len(placed)} records in one atomic batch; the same user always lands "
            f"in the same partition (first: partition {placed[0][0]}, offset {placed[0][1]})"
        )
        c.print(describe_table(log, _QUICK_EVENTS))

        c.rule("[bold]3. Transactions: abort is invisible, commit is atomic")
        end_before = log.end_offset(_QUICK_PAYMENTS, 0)
        producer = log.transactional_producer(_QUICK_TXN_ID)
        producer.begin()
        producer.append(_QUICK_PAYMENTS, _quick_payments("aborted"))
        c.print(
            f"staged 3 payments; uncommitted end offset "
            f"{log.end_offset(_QUICK_PAYMENTS, 0, 'read_uncommitted')}, committed end offset "
            f"{log.end_offset(_QUICK_PAYMENTS, 0)}"
        )
        producer.abort()
        c.print(f"aborted: end offset still {log.end_offset(_QUICK_PAYMENTS, 0)} (nothing visible)")
        producer.begin()
        producer.append(_QUICK_PAYMENTS, _quick_payments("committed"))
        handle = producer.prepare()
        c.print(f"prepared (durable, invisible): {handle.to_dict()}")
        log.commit_prepared(handle)
        log.commit_prepared(handle)
        c.print("committed twice (the second is a no-op); now visible:")
        for r in log.read(_QUICK_PAYMENTS, 0, end_before):
            c.print(f"  offset {r.offset}: {r.value!r}", highlight=False)

        c.rule("[bold]4. A consumer group reads 50 records a partition and commits")
        positions = {}
        for p in range(log.partition_count(_QUICK_EVENTS)):
            start = log.committed_offset(_QUICK_GROUP, _QUICK_EVENTS, p)
            start = log.start_offset(_QUICK_EVENTS, p) if start is None else start
            batch = log.read(_QUICK_EVENTS, p, start, max_records=50)
            positions[(_QUICK_EVENTS, p)] = batch[-1].offset + 1 if batch else start
        log.commit_offsets(_QUICK_GROUP, positions)
        table = lag_table(log, _QUICK_GROUP)
        if table is not None:
            c.print(table)
        where = "" if log.path == DEFAULT_LOG_DIR else f" --log-dir {log.path}"
    c.print(f"Try: [bold]weirflow log{where} consume {_QUICK_EVENTS} --max 5 --format jsonl")
