"""The ``windowed_count`` workload (WORKLOADS.md): generator, plain-loop reference, weirflow job."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

WINDOW_MS = 10_000
OUT_OF_ORDERNESS_MS = 500


def events(n: int) -> Iterator[dict[str, Any]]:
    """Yield the ``n`` seeded events (``user``, ``ts`` in ms, ``amount``), lazily."""
    r = random.Random(42).random
    for i in range(n):
        user = f"u{int(r() * 1000)}"
        ts = max(0, i - int(r() * 501))
        amount = 1 + int(r() * 100)
        yield {"user": user, "ts": ts, "amount": amount}


def plain_loop(n: int) -> list[tuple[str, int, int, int]]:
    """The speed limit: one dict keyed by (user, window start), closing windows on the watermark.

    Returns:
        ``(user, window_start_ms, count, sum)`` per window.
    """
    windows: dict[tuple[str, int], list[int]] = {}
    by_end: dict[int, list[tuple[str, int]]] = {}
    out: list[tuple[str, int, int, int]] = []
    max_ts = -(2**63)
    next_end = None
    for e in events(n):
        ts = e["ts"]
        start = ts - ts % WINDOW_MS
        k = (e["user"], start)
        acc = windows.get(k)
        if acc is None:
            windows[k] = [1, e["amount"]]
            by_end.setdefault(start + WINDOW_MS, []).append(k)
            if next_end is None or start + WINDOW_MS < next_end:
                next_end = start + WINDOW_MS
        else:
            acc[0] += 1
            acc[1] += e["amount"]
        if ts > max_ts:
            max_ts = ts
            wm = max_ts - OUT_OF_ORDERNESS_MS
            while next_end is not None and next_end <= wm:
                for key in by_end.pop(next_end):
                    c, s = windows.pop(key)
                    out.append((key[0], key[1], c, s))
                next_end = min(by_end) if by_end else None
    for end in sorted(by_end):
        for key in by_end[end]:
            c, s = windows.pop(key)
            out.append((key[0], key[1], c, s))
    return out


def weirflow_job(n: int, parallelism: int = 1, **run_options: Any) -> list[Any]:
    """The same workload through weirflow: source → key_by → tumbling window → reduce.

    Returns:
        The :class:`~weirflow.WindowResult` list, value = ``(count, sum)``.
    """
    from weirflow import Dataflow, WatermarkStrategy
    from weirflow.connectors import CollectSink, IterableSource
    from weirflow.windows import TumblingWindows

    flow = Dataflow("windowed_count")
    sink = CollectSink()
    (
        flow.source(
            IterableSource(lambda: events(n), partitions=1),
            timestamp=lambda e: e["ts"],
            watermarks=WatermarkStrategy.bounded_out_of_orderness(
                timedelta(milliseconds=OUT_OF_ORDERNESS_MS)
            ),
        )
        .map(lambda e: (e["user"], 1, e["amount"]))
        .key_by(lambda t: t[0])
        .window(TumblingWindows(size=timedelta(milliseconds=WINDOW_MS)))
        .reduce(lambda a, b: (a[0], a[1] + b[1], a[2] + b[2]))
        .sink(sink)
    )
    flow.run(parallelism=parallelism, **run_options)
    return sink.results
