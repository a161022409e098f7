"""What metrics cost: the ``windowed_count`` workload with metrics on and off, in one process.

"On" attaches what ``weirflow run`` attaches to every job: the sampling hook
(a scheduler ``before_round`` hook that reads the runtime's counters every
500 ms and publishes them to Prometheus) and the dead-letter observers.
Runs alternate off, on, off, on… after a warm-up, so that drift of a shared
machine hits both alike. Each run is timed twice: wall time, and the
process's CPU time (``time.process_time``), which leaves out the time other
programs on a shared machine took the CPU away. The cost is
``1 − on/off`` of the median events/s by CPU time; the table also shows the
wall-time figures. The target is a cost below 3%; above it the script exits
with status 1. Both variants must produce the same windows.

Usage: python benchmarks/metrics_overhead.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads
from weirflow.metrics import CheckpointTracker, JobRegistry, RuntimeCollector
from weirflow.runtime import LocalScheduler, RunListener, wall_clock_ms

TARGET_COST = 0.03
DEFAULT_EVENTS = 1_000_000
WARM_UP_EVENTS = 20_000


class Sampling(RunListener):
    """Attaches a :class:`~weirflow.metrics.RuntimeCollector` to every attempt, as a run does.

    Attributes:
        collector: the collector (its last status holds the final sample).
    """

    def __init__(self) -> None:
        metrics = JobRegistry("windowed_count")
        self.collector = RuntimeCollector(metrics, CheckpointTracker(metrics, wall_clock_ms))

    def attempt_running(self, scheduler: LocalScheduler, coordinator: object) -> None:
        """Attach the collector and its per-round hook."""
        self.collector.attach(scheduler.tasks, None)
        scheduler.hooks.before_round.append(self.collector.on_round)


def run(n: int, metrics: bool) -> tuple[float, float, int, int]:
    """Run the workload once.

    Returns:
        ``(wall_s, cpu_s, windows, samples)``: wall time and CPU time in
        seconds, window results, and how many samples the collector took (0
        without metrics).
    """
    listener = Sampling() if metrics else None
    start, start_cpu = time.perf_counter(), time.process_time()
    results = workloads.weirflow_job(n, **({"listener": listener} if listener else {}))
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    samples = listener.collector.samples if listener is not None else 0
    return seconds, cpu, len(results), samples


def main() -> int:
    """Run the comparison and print the table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    run(WARM_UP_EVENTS, False)
    run(WARM_UP_EVENTS, True)
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    windows: dict[bool, set[int]] = {False: set(), True: set()}
    for i in range(args.repeat):
        for on in (False, True) if i % 2 == 0 else (True, False):
            seconds, cpu_s, count, samples = run(args.events, on)
            times[on].append(seconds)
            cpu[on].append(cpu_s)
            windows[on].add(count)
            if on and samples < 2:
                console.print("[red]metrics were on but nothing was sampled[/]")
                return 1
    if windows[False] != windows[True] or len(windows[False]) != 1:
        console.print(f"[red]outputs differ:[/] {windows}")
        return 1
    rate = {on: args.events / statistics.median(t) for on, t in cpu.items()}
    wall_rate = {on: args.events / statistics.median(t) for on, t in times.items()}
    cost = 1 - rate[True] / rate[False]
    wall_cost = 1 - wall_rate[True] / wall_rate[False]
    table = Table(title=f"windowed_count, {args.events:,} events, median of {args.repeat}")
    for col in ("metrics", "events/CPU-s", "events/s (wall)", "CPU s per run", "wall s per run"):
        table.add_column(col, justify="right" if col != "metrics" else "left")
    for on in (False, True):
        table.add_row(
            "on" if on else "off",
            f"{rate[on]:,.0f}",
            f"{wall_rate[on]:,.0f}",
            " ".join(f"{t:.2f}" for t in cpu[on]),
            " ".join(f"{t:.2f}" for t in times[on]),
        )
    console.print(table)
    verdict = "[green]within[/]" if cost < TARGET_COST else "[red]over[/]"
    console.print(
        f"cost of metrics: {cost:.2%} of CPU time ({verdict} the {TARGET_COST:.0%} target); "
        f"{wall_cost:.2%} of wall time"
    )
    return 0 if cost < TARGET_COST else 1


if __name__ == "__main__":
    sys.exit(main())
