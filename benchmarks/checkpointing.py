"""Checkpointing costs: throughput with and without checkpoints, checkpoint duration, recovery time.

1. ``windowed_count`` (WORKLOADS.md) at parallelism 1: no checkpoints vs
   exactly-once checkpoints every second (events/s and their ratio; target
   ≥ 0.9), each run in a fresh process, median of ``--repeat``;
2. checkpoint duration (trigger to manifest) p50/p99 during those runs;
3. recovery time under ``weirflow run``: a job holding 10 MB (and, without
   ``--quick``, 1 GB) of keyed state is SIGKILLed after a checkpoint holding
   all of it completed; recovery = SIGKILL → the restarted worker processes
   its first record (state restored);
4. backpressure: a source offering 20,000 records/s → ``key_by`` → a keyed
   running sum (parallelism 2) → a stage that takes 0.5 ms a record (10% of
   the source rate) → a sink, each run ``--backpressure-s`` seconds with
   checkpoints every 500 ms: checkpoint duration p50/p99 aligned vs
   unaligned, and unaligned without the slow stage (no backpressure);
   target: unaligned p99 under backpressure ≤ 2 × without.

Usage: ``python benchmarks/checkpointing.py [--events N] [--repeat R] [--quick]
[--backpressure-s S]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from recovery import recovery_time  # noqa: E402
from weirflow import CheckpointConfig, Dataflow  # noqa: E402
from weirflow.connectors import CollectSink, SourceBatch  # noqa: E402
from weirflow.runtime import (  # noqa: E402
    CheckpointedRun,
    RunListener,
    RuntimeOptions,
    in_flight_items,
    wall_clock_ms,
)
from workloads import weirflow_job  # noqa: E402

console = Console()


class _Durations(RunListener):
    def __init__(self) -> None:
        self.durations: list[int] = []
        self.in_flight: list[int] = []

    def checkpoint_completed(self, completed) -> None:  # type: ignore[no-untyped-def]
        self.durations.append(completed.manifest.duration_ms)
        self.in_flight.append(in_flight_items(completed.manifest))


def _throughput(n: int, checkpoints: bool, out: mp.Queue) -> None:  # type: ignore[type-arg]
    listener = _Durations()
    with tempfile.TemporaryDirectory() as d:
        opts = (
            {
                "checkpoint": CheckpointConfig(storage=d, interval=timedelta(seconds=1)),
                "listener": listener,
            }
            if checkpoints
            else {}
        )
        start = time.perf_counter()
        results = weirflow_job(n, **opts)
        elapsed = time.perf_counter() - start
    out.put((n / elapsed, len(results), listener.durations))


def throughput(n: int, checkpoints: bool, repeat: int) -> tuple[float, list[int]]:
    """Median events/s over ``repeat`` fresh processes, and all checkpoint durations (ms)."""
    ctx = mp.get_context("spawn")
    rates, durations = [], []
    for _ in range(repeat):
        q = ctx.Queue()
        p = ctx.Process(target=_throughput, args=(n, checkpoints, q))
        p.start()
        rate, count, durs = q.get()
        p.join()
        if n == 2_000_000 and count != 199_984:
            raise SystemExit(f"wrong result count {count} (want 199,984)")
        rates.append(rate)
        durations.extend(durs)
    return statistics.median(rates), durations


def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


SOURCE_RATE = 20_000  # records/s offered by the backpressure case's source


class _PacedReader:
    def __init__(self, splits: Sequence[str], positions: Mapping[str, int]) -> None:
        self.splits = list(splits)
        self.read = {s: int(positions.get(s, 0)) for s in self.splits}
        self.start = time.monotonic()
        self.offered = 0

    def poll(self, max_records: int) -> SourceBatch | None:
        if not self.splits:
            return None
        due = int((time.monotonic() - self.start) * SOURCE_RATE / 2) - self.offered
        n = min(max_records, due)
        if n <= 0:
            return None
        self.offered += n
        split = self.splits[0]
        first = self.read[split]
        self.read[split] = first + n
        return SourceBatch(split, list(range(first, first + n)), None)

    def finished(self) -> bool:
        return False

    def positions(self) -> dict[str, int]:
        return dict(self.read)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        return None

    def close(self) -> None:
        return None


class PacedSource:
    """Unbounded, 2 splits, together ``SOURCE_RATE`` records/s at most (as fast when behind)."""

    bounded = False

    def list_splits(self) -> list[str]:
        return ["0", "1"]

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, int]) -> _PacedReader:
        return _PacedReader(splits, positions)


def _paced_by(per_record_s: float) -> Callable[[int], int]:
    def slow(v: int) -> int:
        time.sleep(per_record_s)
        return v

    return slow


def backpressure_durations(
    unaligned: bool, sink_share: float | None, seconds: float
) -> tuple[list[int], list[int]]:
    """Run the backpressure job for ``seconds``; its checkpoint durations (ms) and in-flight
    buffers, the stop checkpoint left out.

    Args:
        unaligned: take unaligned checkpoints.
        sink_share: the slow stage's capacity as a share of the source rate (0.1: 10%);
            ``None``: no slow stage (no backpressure).
        seconds: how long to run before stopping.
    """
    flow = Dataflow("backpressure")
    sums = (
        flow.source(PacedSource(), name="numbers")
        .key_by(lambda v: v % 64)
        .reduce(lambda a, b: a + b, name="sums")
    )
    if sink_share is not None:
        sums = sums.map(_paced_by(1 / (SOURCE_RATE * sink_share)), name="slow")
    sums.sink(CollectSink(), name="out")
    listener = _Durations()
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as d:
        run = CheckpointedRun(
            flow.graph,
            2,
            128,
            CheckpointConfig(storage=d, interval=timedelta(milliseconds=500), unaligned=unaligned),
            options=RuntimeOptions(source_batch_size=512, buffer_size=128, channel_capacity=4),
            clock=wall_clock_ms,
            sleep=time.sleep,
            stop=stop,
            listener=listener,
        )
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        try:
            run.run()
        finally:
            timer.cancel()
    return listener.durations[:-1], listener.in_flight[:-1]


def main() -> None:
    """Run the three measurements and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="200k events, 1 run, 10 MB state only")
    ap.add_argument(
        "--state-mb", type=int, nargs="*", help="state sizes for recovery (default 10 and 1024)"
    )
    ap.add_argument(
        "--backpressure-s",
        type=float,
        help="seconds per run of the backpressure case (default 20; 5 with --quick)",
    )
    args = ap.parse_args()
    n, repeat = (200_000, 1) if args.quick else (args.events, args.repeat)
    plain_rate, _ = throughput(n, False, repeat)
    ck_rate, durations = throughput(n, True, repeat)
    table = Table(title=f"checkpointing, windowed_count, {n:,} events, parallelism 1")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("events/s, no checkpoints", f"{plain_rate:,.0f}")
    table.add_row("events/s, exactly-once, 1 s checkpoints", f"{ck_rate:,.0f}")
    table.add_row("ratio (target ≥ 0.9)", f"{ck_rate / plain_rate:.2f}")
    table.add_row("checkpoints", str(len(durations)))
    table.add_row(
        "checkpoint duration p50 / p99 (ms)",
        f"{_pct(durations, 0.5):.0f} / {_pct(durations, 0.99):.0f}",
    )
    mbs = args.state_mb if args.state_mb is not None else ([10] if args.quick else [10, 1024])
    sizes = [(mb << 20, max(100, mb * 1000)) for mb in mbs]
    for state_bytes, keys in sizes:
        seconds, size, _ = recovery_time(state_bytes, keys)
        table.add_row(
            f"recovery, {state_bytes >> 20} MB state ({size / 1e6:,.0f} MB checkpoint)",
            f"{seconds:.2f} s",
        )
    bp_s = args.backpressure_s or (5.0 if args.quick else 20.0)
    for label, unaligned, share in (
        ("aligned, a stage at 10% of the source rate", False, 0.1),
        ("unaligned, a stage at 10% of the source rate", True, 0.1),
        ("unaligned, no backpressure (no slow stage)", True, None),
    ):
        durs, in_flight = backpressure_durations(unaligned, share, bp_s)
        table.add_row(
            f"backpressure: {label}: checkpoints, p50 / p99 (ms), mean in-flight buffers",
            f"{len(durs)}, {_pct(durs, 0.5):.0f} / {_pct(durs, 0.99):.0f}, "
            f"{statistics.fmean(in_flight) if in_flight else 0:.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
