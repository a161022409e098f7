"""The ``windowed_count`` workload (WORKLOADS.md) through weirflow and through the plain loop.

Each run of each system happens in a fresh process (``multiprocessing``
spawn), so the peak resident set size (``ru_maxrss``) is that system's
alone. A run times the whole job, event generation included, and checks its
output: the counts sum to N; both systems produce the same windows with the
same counts and sums; for N = 2,000,000 there are 199,984 windows whose
amounts sum to 100,966,746. A mismatch exits with status 1. The table shows
the median events/s of ``--repeat`` runs, the ratio to the plain loop and the
peak RSS. The target is weirflow (parallelism 1) ≥ 0.5 × the plain loop.

Usage: python benchmarks/windowed_count.py [--events N] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads

FULL_EVENTS = 2_000_000
QUICK_EVENTS = 200_000
EXPECTED_FULL = {"windows": 199_984, "amounts": 100_966_746}
TARGET_RATIO = 0.5
WARM_UP_EVENTS = 2_000


class RunResult(NamedTuple):
    """One run of one system.

    Attributes:
        seconds: wall time of the whole job (generation included).
        windows: number of window results.
        count_sum: sum of the window counts (must equal the events).
        amount_sum: sum of the window amounts.
        digest: SHA-256 over the sorted ``(user, start_ms, count, sum)`` rows,
            to compare the systems window by window.
        peak_rss_mb: the process's peak resident set size in MiB.
    """

    seconds: float
    windows: int
    count_sum: int
    amount_sum: int
    digest: str
    peak_rss_mb: float


def _plain(n: int) -> list[tuple[str, int, int, int]]:
    return workloads.plain_loop(n)


def _weirflow(n: int) -> list[tuple[str, int, int, int]]:
    return [(r.key, r.start_ms, r.value[1], r.value[2]) for r in workloads.weirflow_job(n)]


SYSTEMS: dict[str, Callable[[int], list[tuple[str, int, int, int]]]] = {
    "plain loop": _plain,
    "weirflow (p=1)": _weirflow,
}


def run_once(system: str, n: int) -> RunResult:
    """Run ``system`` on ``n`` events in this process and summarise its output.

    Args:
        system: a key of :data:`SYSTEMS`.
        n: number of events.

    Returns:
        The :class:`RunResult`; ``seconds`` covers only the job: a small warm-up
        run first pays for imports and first-call costs, as WORKLOADS.md's
        figures are steady-state.
    """
    SYSTEMS[system](WARM_UP_EVENTS)
    start = time.perf_counter()
    rows = SYSTEMS[system](n)
    seconds = time.perf_counter() - start
    # read before summarising, which builds a large string; ru_maxrss is in KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.sort()
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()
    return RunResult(
        seconds=seconds,
        windows=len(rows),
        count_sum=sum(r[2] for r in rows),
        amount_sum=sum(r[3] for r in rows),
        digest=digest,
        peak_rss_mb=peak,
    )


def run_fresh(system: str, n: int) -> RunResult:
    """Run :func:`run_once` in a new spawned process (its own interpreter and RSS)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(run_once, (system, n))


def check(system: str, r: RunResult, n: int, reference: RunResult | None) -> list[str]:
    """Return the WORKLOADS.md checks that ``r`` fails (empty when it passes)."""
    errors = []
    if r.count_sum != n:
        errors.append(f"{system}: counts sum to {r.count_sum:,}, expected {n:,}")
    if n == FULL_EVENTS:
        if r.windows != EXPECTED_FULL["windows"]:
            errors.append(f"{system}: {r.windows:,} windows, expected 199,984")
        if r.amount_sum != EXPECTED_FULL["amounts"]:
            errors.append(f"{system}: amounts sum to {r.amount_sum:,}, expected 100,966,746")
    if reference is not None and r.digest != reference.digest:
        errors.append(f"{system}: window results differ from the plain loop's")
    return errors


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 when an output check fails)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="events (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per system (default 3)")
    parser.add_argument("--quick", action="store_true", help="200,000 events, 1 run")
    args = parser.parse_args(argv)
    n = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    repeat = args.repeat or (1 if args.quick else 3)
    console = Console()
    runs: dict[str, list[RunResult]] = {}
    errors: list[str] = []
    for system in SYSTEMS:
        runs[system] = []
        for i in range(repeat):
            r = run_fresh(system, n)
            console.print(
                f"{system} run {i + 1}/{repeat}: {n / r.seconds:,.0f} events/s, "
                f"{r.windows:,} windows, peak RSS {r.peak_rss_mb:.0f} MiB"
            )
            errors += check(system, r, n, runs["plain loop"][0] if runs["plain loop"] else None)
            runs[system].append(r)
    rates = {s: statistics.median(n / r.seconds for r in rs) for s, rs in runs.items()}
    table = Table(title=f"windowed_count, {n:,} events, median of {repeat}")
    table.add_column("system")
    table.add_column("events/s", justify="right")
    table.add_column("ratio to plain loop", justify="right")
    table.add_column("peak RSS (MiB)", justify="right")
    for system, rs in runs.items():
        table.add_row(
            system,
            f"{rates[system]:,.0f}",
            f"{rates[system] / rates['plain loop']:.2f}",
            f"{max(r.peak_rss_mb for r in rs):.0f}",
        )
    console.print(table)
    ratio = rates["weirflow (p=1)"] / rates["plain loop"]
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    console.print(f"target weirflow ≥ {TARGET_RATIO} × plain loop: {verdict} ({ratio:.2f})")
    for e in errors:
        console.print(f"[red]check failed:[/red] {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
