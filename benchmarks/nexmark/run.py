"""Nexmark on weirflow: events/s per query on one core, peak memory, checkpoints.

Each query runs in a fresh process (``multiprocessing`` spawn) at
parallelism 1 with one source split, so events/s is per core and the peak
resident set size (``ru_maxrss``) is that query's alone. The source is
:class:`~weirflow.connectors.NexmarkSource` (as fast as possible), with
watermarks ``date_time - 4 s`` as in Flink's Nexmark DDL; the sink counts
records and drops them (Flink's Nexmark runs use a blackhole sink too). The
timed part is the whole job, event generation included, after a small
warm-up run that pays for imports. ``--check`` also compares every query's
output with a plain batch computation (:mod:`reference`; small N only).

The table shows Flink's published per-core figures (nexmark README, Flink
1.13, 8 cores per machine, RocksDB, exactly-once checkpoints every 3 min) and
weirflow's ratio to them. Results are also written as JSON.

Usage: python benchmarks/nexmark/run.py [--events N] [--queries q0,q5|all]
       [--guarantee exactly_once|at_least_once|none] [--checkpoint-interval 1s]
       [--json PATH] [--check] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import queries
import reference

FLINK_PER_CORE = {
    "q0": 155_000,
    "q1": 158_000,
    "q2": 175_000,
    "q3": 152_000,
    "q4": 34_000,
    "q5": 22_000,
    "q7": 12_000,
    "q8": 146_000,
    "q11": 40_000,
}
"""Flink's published throughput per core (events/s), from ``../shared/NEXMARK.md``."""

FULL_EVENTS = 1_000_000
QUICK_EVENTS = 100_000
WARM_UP_EVENTS = 2_000
WATERMARK_DELAY = timedelta(seconds=4)
DEFAULT_JSON = Path(__file__).resolve().parents[1] / "results" / "nexmark.json"


class QueryRun(NamedTuple):
    """One query run.

    Attributes:
        query: the query name.
        events: events generated.
        seconds: wall time of the job.
        results: records the query emitted.
        checkpoints: checkpoints completed.
        peak_rss_mb: the process's peak resident set size in MiB.
        correct: whether the output equals the batch answer (``None``: not checked).
    """

    query: str
    events: int
    seconds: float
    results: int
    checkpoints: int
    peak_rss_mb: float
    correct: bool | None


class CountingSink:
    """A sink that counts the records it is given and keeps them only when asked (``--check``).

    Args:
        keep: keep the records in :attr:`kept`.
    """

    def __init__(self, keep: bool = False) -> None:
        self.count = 0
        self.keep = keep
        self.kept: list[Any] = []

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> CountingSink:
        """All subtasks share this object (one process)."""
        return self

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Count (and maybe keep) a batch."""
        self.count += len(values)
        if self.keep:
            self.kept.extend(values)

    def pre_commit(self, checkpoint_id: int) -> None:
        """Nothing to prepare."""

    def commit(self, checkpoint_id: int) -> None:
        """Nothing to commit."""

    def finish(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to release."""


def run_query(
    query: str, events: int, guarantee: str, interval_ms: int, check: bool
) -> tuple[float, int, int, list[Any]]:
    """Run ``query`` over ``events`` Nexmark events in this process.

    Args:
        query: a key of :data:`queries.QUERIES`.
        events: events to generate.
        guarantee: ``exactly_once``, ``at_least_once`` or ``none`` (no checkpoints).
        interval_ms: checkpoint interval in ms.
        check: keep the output records (returned last).

    Returns:
        ``(seconds, result count, checkpoints completed, kept records)``.
    """
    from weirflow import CheckpointConfig, Dataflow, WatermarkStrategy
    from weirflow.connectors import NexmarkSource

    flow = Dataflow(f"nexmark_{query}")
    stream = flow.source(
        NexmarkSource(events),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(WATERMARK_DELAY),
        name="nexmark",
    )
    sink = CountingSink(keep=check)
    queries.QUERIES[query](stream).sink(sink, name="sink")
    with tempfile.TemporaryDirectory(prefix="weirflow-nexmark-") as tmp:
        options: dict[str, Any] = {}
        if guarantee != "none":
            options["checkpoint"] = CheckpointConfig(
                storage=tmp,
                interval=timedelta(milliseconds=interval_ms),
                mode=guarantee,  # type: ignore[arg-type]
            )
        start = time.perf_counter()
        result = flow.run(parallelism=1, **options)
        seconds = time.perf_counter() - start
    return seconds, sink.count, result.checkpoints_completed, sink.kept


def measure(query: str, events: int, guarantee: str, interval_ms: int, check: bool) -> QueryRun:
    """Warm up, run ``query`` once, read the peak RSS, and (``check``) compare with the batch."""
    run_query(query, WARM_UP_EVENTS, "none", interval_ms, False)
    seconds, results, checkpoints, kept = run_query(query, events, guarantee, interval_ms, check)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    correct = None
    if check:
        from weirflow.connectors.nexmark import NexmarkGenerator

        expected = reference.REFERENCES[query](NexmarkGenerator().events(0, 1, events))
        correct = reference.final(query, kept) == expected
    return QueryRun(query, events, seconds, results, checkpoints, peak, correct)


def measure_fresh(
    query: str, events: int, guarantee: str, interval_ms: int, check: bool
) -> QueryRun:
    """:func:`measure` in a new spawned process (its own interpreter and RSS)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(measure, (query, events, guarantee, interval_ms, check))


def parse_interval(text: str) -> int:
    """``"1s"``, ``"500ms"``, ``"2m"`` or a bare number of ms → milliseconds.

    Raises:
        argparse.ArgumentTypeError: an unreadable or non-positive interval.
    """
    units = {"ms": 1, "s": 1000, "m": 60_000}
    for suffix in ("ms", "s", "m"):
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], units[suffix]
            break
    else:
        number, factor = text, 1
    try:
        ms = int(float(number) * factor)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad interval {text!r}; e.g. 1s or 500ms") from e
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"interval must be positive, got {text!r}")
    return ms


def table(runs: list[QueryRun], guarantee: str, interval_ms: int) -> Table:
    """The results as a rich table, with Flink's per-core figures and the ratio."""
    mode = "no checkpoints" if guarantee == "none" else f"{guarantee}, {interval_ms} ms checkpoints"
    t = Table(title=f"Nexmark on weirflow, parallelism 1, {mode}")
    for col in ("query", "events", "events/s", "Flink/core", "ratio", "results", "checkpoints"):
        t.add_column(col, justify="left" if col == "query" else "right")
    t.add_column("peak RSS (MiB)", justify="right")
    t.add_column("output", justify="right")
    for r in runs:
        rate = r.events / r.seconds
        flink = FLINK_PER_CORE[r.query]
        t.add_row(
            r.query,
            f"{r.events:,}",
            f"{rate:,.0f}",
            f"{flink:,}",
            f"{rate / flink:.2f}",
            f"{r.results:,}",
            str(r.checkpoints),
            f"{r.peak_rss_mb:.0f}",
            {None: "-", True: "ok", False: "WRONG"}[r.correct],
        )
    return t


def main(argv: list[str] | None = None) -> int:
    """Run the selected queries; return 1 when a checked output is wrong, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="events per query")
    parser.add_argument("--queries", default="all", help="comma-separated, or 'all'")
    parser.add_argument(
        "--guarantee", choices=("exactly_once", "at_least_once", "none"), default="exactly_once"
    )
    parser.add_argument("--checkpoint-interval", type=parse_interval, default=1000)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--check", action="store_true", help="compare with the batch answers")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    args = parser.parse_args(argv)
    names = list(queries.QUERIES) if args.queries == "all" else args.queries.split(",")
    unknown = [q for q in names if q not in queries.QUERIES]
    if unknown:
        parser.error(f"unknown queries {unknown}; known: {', '.join(queries.QUERIES)}")
    events = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    console = Console(width=140)
    runs = []
    for q in names:
        r = measure_fresh(q, events, args.guarantee, args.checkpoint_interval, args.check)
        console.print(
            f"{q}: {r.events / r.seconds:,.0f} events/s, {r.results:,} results, "
            f"{r.checkpoints} checkpoints, peak RSS {r.peak_rss_mb:.0f} MiB"
        )
        runs.append(r)
    console.print(table(runs, args.guarantee, args.checkpoint_interval))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "guarantee": args.guarantee,
                "checkpoint_interval_ms": args.checkpoint_interval,
                "parallelism": 1,
                "runs": [
                    {**r._asdict(), "events_per_s": r.events / r.seconds, "flink_per_core": f}
                    for r in runs
                    for f in [FLINK_PER_CORE[r.query]]
                ],
            },
            indent=2,
        )
    )
    console.print(f"results written to {args.json}")
    wrong = [r.query for r in runs if r.correct is False]
    for q in wrong:
        console.print(f"[red]check failed:[/red] {q} differs from the batch computation")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
