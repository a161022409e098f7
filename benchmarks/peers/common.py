"""What every implementation of ``windowed_count`` shares: output summary and latency.

This module runs inside the peers' own virtual environments too, so it
imports nothing but the standard library and ``benchmarks/workloads.py``
(whose generator needs nothing else).

Latency (``--latency``): events are released at a fixed rate; event ``i``
is due at ``t0 + i / rate`` (monotonic clock). A window ``[start, end)`` can
close once the watermark (largest timestamp − 500 ms) reaches ``end``, that
is at the first event ``i`` whose running maximum timestamp is ≥ ``end +
500``; its latency is the time its result reaches the sink minus that
event's due time. Windows flushed at end of input are not counted.
"""

from __future__ import annotations

import hashlib
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workloads

Row = tuple[str, int, int, int]


def summarize(rows: list[Row], seconds: float) -> dict[str, Any]:
    """Summarise one run's window results (sorted in place) for the parent process.

    Args:
        rows: ``(user, window_start_ms, count, sum)`` per window.
        seconds: wall time of the job.

    Returns:
        ``seconds``, ``windows``, ``count_sum``, ``amount_sum``, ``digest``
        (SHA-256 over the sorted rows' ``repr``, as ``windowed_count.run_once``
        computes it) and ``peak_rss_mb`` (read before the summary is built).
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.sort()
    return {
        "seconds": seconds,
        "windows": len(rows),
        "count_sum": sum(r[2] for r in rows),
        "amount_sum": sum(r[3] for r in rows),
        "digest": hashlib.sha256(repr(rows).encode()).hexdigest(),
        "peak_rss_mb": peak,
    }


def due_index_by_window_end(n: int) -> dict[int, int]:
    """Window end (ms) → index of the event that lets the watermark close it.

    Only windows that close before the end of input are listed.
    """
    due: dict[int, int] = {}
    size = workloads.WINDOW_MS
    delay = workloads.OUT_OF_ORDERNESS_MS
    next_end = size
    max_ts = -1
    for i, e in enumerate(workloads.events(n)):
        if e["ts"] > max_ts:
            max_ts = e["ts"]
            while max_ts - delay >= next_end:
                due[next_end] = i
                next_end += size
    return due


def latency_summary(
    arrivals: list[tuple[int, float]], n: int, rate: int, t0: float
) -> dict[str, float | int]:
    """p50/p99 of window latency from the sink's arrival times.

    Args:
        arrivals: ``(window_end_ms, monotonic arrival time in s)`` per window result.
        n: events in the run.
        rate: events per second the source released.
        t0: monotonic time (s) at which event 0 was due.

    Returns:
        ``windows`` (results measured), ``p50_ms``, ``p99_ms`` and ``max_ms``.
    """
    due = due_index_by_window_end(n)
    lat = sorted((t - (t0 + due[end] / rate)) * 1000.0 for end, t in arrivals if end in due)
    if not lat:
        return {
            "windows": 0,
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
        }
    return {
        "windows": len(lat),
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max_ms": lat[-1],
    }
