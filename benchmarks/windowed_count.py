"""The ``windowed_count`` workload (docs/workloads.md) through weirflow, the plain loop and peers.

Each run of each system happens in a fresh process (``multiprocessing``
spawn for weirflow and the plain loop; the peers' own interpreters from
``benchmarks/.peers/``), so the peak resident set size (``ru_maxrss``) is
that system's alone. A run times the whole job, event generation included,
after a small warm-up run (steady state, as the figures of docs/workloads.md), and
checks its output: the counts sum to N; every system produces the same
windows with the same counts and sums as the plain loop; for N = 2,000,000
there are 199,984 windows whose amounts sum to 100,966,746. A mismatch exits
with status 1. The table shows the median events/s of ``--repeat`` runs, the
ratio to the plain loop and the peak RSS.

Systems: the plain loop; weirflow at parallelism 1 without checkpoints and
with exactly-once checkpoints every second. ``--peers`` adds Bytewax 0.21.1
(recovery off and on) and Quix Streams 3.28.1 with a Tansu broker
(at-least-once and exactly-once), each installed into its own venv on first
use; what each is configured with beyond its defaults, and why, is in
``benchmarks/peers/*_windowed_count.py``. A peer that cannot be installed or
run is reported and skipped.

``--latency`` releases the events at a fixed rate (``--latency-rate``,
default 50,000/s; Quix at ``--quix-latency-rate``, default 5,000/s, because
it processes about 25,000/s here and a rate near capacity measures queueing;
weirflow is measured at that rate too)
and reports the p50/p99 delay from the moment the watermark passes a
window's end to its result reaching the sink (``benchmarks/peers/common.py``).

Targets: weirflow with exactly-once 1 s checkpoints ≥ 0.5 × the plain loop,
≥ 10 × Bytewax and ≥ 20 × Quix Streams.

Usage: python benchmarks/windowed_count.py [--events N] [--repeat R] [--quick]
       [--peers] [--latency] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import common
import envs

import workloads

FULL_EVENTS = 2_000_000
QUICK_EVENTS = 200_000
EXPECTED_FULL = {"windows": 199_984, "amounts": 100_966_746}
TARGET_RATIO = 0.5
TARGET_OVER_PEER = {"bytewax": 10.0, "quix": 20.0}
WARM_UP_EVENTS = 2_000
LATENCY_RATE = 50_000
QUIX_LATENCY_RATE = 5_000
LATENCY_SECONDS = 10
QUICK_LATENCY_SECONDS = 5
MIN_LATENCY_EVENTS = 31_000
"""Three window ends (10,000 events each) close within a latency run, at least."""
PEER_TIMEOUT_S = 1800
PEERS_DIR = Path(__file__).resolve().parent / "peers"
WEIRFLOW = "weirflow (p=1)"
WEIRFLOW_EO = "weirflow (p=1, exactly-once, 1 s checkpoints)"
PLAIN = "plain loop"


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


def _weirflow_exactly_once(n: int) -> list[tuple[str, int, int, int]]:
    from weirflow import CheckpointConfig

    with tempfile.TemporaryDirectory(prefix="weirflow-bench-") as tmp:
        config = CheckpointConfig(storage=tmp, interval=timedelta(seconds=1))
        results = workloads.weirflow_job(n, checkpoint=config)
    return [(r.key, r.start_ms, r.value[1], r.value[2]) for r in results]


SYSTEMS: dict[str, Callable[[int], list[tuple[str, int, int, int]]]] = {
    PLAIN: _plain,
    WEIRFLOW: _weirflow,
    WEIRFLOW_EO: _weirflow_exactly_once,
}
"""The systems run in this interpreter (each in a fresh spawned process)."""


class Peer(NamedTuple):
    """A peer system run by its own interpreter.

    Attributes:
        env: its virtual environment.
        script: the script in ``benchmarks/peers/`` that runs the workload.
        args: the script's arguments besides ``--events`` and ``--rate``.
        family: ``bytewax`` or ``quix`` (for the targets).
    """

    env: envs.PeerEnv
    script: str
    args: tuple[str, ...]
    family: str


PEERS: dict[str, Peer] = {
    "Bytewax 0.21.1": Peer(envs.BYTEWAX, "bytewax_windowed_count.py", (), "bytewax"),
    "Bytewax 0.21.1 (recovery, 1 s epochs)": Peer(
        envs.BYTEWAX, "bytewax_windowed_count.py", ("--recovery",), "bytewax"
    ),
    "Quix Streams 3.28.1 (at-least-once)": Peer(
        envs.QUIX, "quix_windowed_count.py", ("--guarantee", "at-least-once"), "quix"
    ),
    "Quix Streams 3.28.1 (exactly-once)": Peer(
        envs.QUIX, "quix_windowed_count.py", ("--guarantee", "exactly-once"), "quix"
    ),
}
"""The peer systems of ``--peers``."""


def run_once(system: str, n: int) -> RunResult:
    """Run ``system`` on ``n`` events in this process and summarise its output.

    Args:
        system: a key of :data:`SYSTEMS`.
        n: number of events.

    Returns:
        The :class:`RunResult`; ``seconds`` covers only the job: a small warm-up
        run first pays for imports and first-call costs, as the figures of
        docs/workloads.md are steady-state.
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


class PeerError(RuntimeError):
    """A peer could not be installed or its run failed (the message says why)."""


def run_peer(peer: Peer, n: int, rate: int | None = None) -> dict[str, Any]:
    """Run ``peer``'s script on ``n`` events in its own interpreter; return its JSON summary.

    Raises:
        PeerError: the peer's venv cannot be installed, or its run failed or timed out.
    """
    try:
        python = envs.ensure(peer.env)
    except envs.PeerInstallError as e:
        raise PeerError(str(e)) from e
    cmd = [str(python), str(PEERS_DIR / peer.script), "--events", str(n), *peer.args]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{peer.script} timed out after {PEER_TIMEOUT_S} s") from e
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise PeerError(f"{peer.script} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def peer_result(summary: Mapping[str, Any]) -> RunResult:
    """A peer's JSON summary as a :class:`RunResult`."""
    return RunResult(**{f: summary[f] for f in RunResult._fields})


class PacedEvents:
    """A bounded weirflow source releasing the workload's events at ``rate`` events/s.

    Event ``i`` becomes readable at ``t0 + i / rate`` (monotonic clock, s);
    one split, whose position is the count of events read.

    Args:
        n: events.
        rate: events per second.
        t0: monotonic time at which event 0 is due.
    """

    bounded = True

    def __init__(self, n: int, rate: int, t0: float) -> None:
        self.n = n
        self.rate = rate
        self.t0 = t0

    def list_splits(self) -> list[str]:
        """One split."""
        return ["0"]

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> _PacedReader:
        """A reader from ``positions`` (events already read)."""
        return _PacedReader(self, int(positions.get("0", 0)))


class _PacedReader:
    def __init__(self, source: PacedEvents, position: int) -> None:
        self._source = source
        self._pos = position
        self._it = itertools.islice(workloads.events(source.n), position, None)
        self._done = False
        self.newly_finished: list[str] = []

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> Any:
        from weirflow.connectors import SourceBatch

        if self._done:
            return None
        if self._pos >= self._source.n:
            self._done = True
            self.newly_finished.append("0")
            return None
        src = self._source
        due = int((time.monotonic() - src.t0) * src.rate) + 1 - self._pos
        values = list(itertools.islice(self._it, min(max_records, due))) if due > 0 else []
        if not values:
            return None
        self._pos += len(values)
        return SourceBatch("0", values, None)

    def finished(self) -> bool:
        return self._done

    def positions(self) -> dict[str, Any]:
        return {"0": self._pos}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        return None

    def close(self) -> None:
        return None


class StampSink:
    """A sink recording ``(window end ms, monotonic arrival time s)`` for each window result."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, float]] = []

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> StampSink:
        """One shared writer (one process)."""
        return self

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Stamp a batch of window results with the time they arrive."""
        now = time.monotonic()
        self.arrivals.extend((r.end_ms, now) for r in values)

    def pre_commit(self, checkpoint_id: int) -> None:
        """Nothing to prepare."""

    def commit(self, checkpoint_id: int) -> None:
        """Nothing to commit."""

    def finish(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to release."""


def weirflow_latency(n: int, rate: int, exactly_once: bool) -> dict[str, float | int]:
    """Window latency of the weirflow job with events released at ``rate`` events/s."""
    from weirflow import CheckpointConfig, Dataflow, WatermarkStrategy
    from weirflow.windows import TumblingWindows

    t0 = time.monotonic() + 0.2
    sink = StampSink()
    flow = Dataflow("windowed_count_latency")
    (
        flow.source(
            PacedEvents(n, rate, t0),
            timestamp=lambda e: e["ts"],
            watermarks=WatermarkStrategy.bounded_out_of_orderness(
                timedelta(milliseconds=workloads.OUT_OF_ORDERNESS_MS)
            ),
        )
        .map(lambda e: (e["user"], 1, e["amount"]))
        .key_by(lambda t: t[0])
        .window(TumblingWindows(size=timedelta(milliseconds=workloads.WINDOW_MS)))
        .reduce(lambda a, b: (a[0], a[1] + b[1], a[2] + b[2]))
        .sink(sink)
    )
    with tempfile.TemporaryDirectory(prefix="weirflow-latency-") as tmp:
        options: dict[str, Any] = {}
        if exactly_once:
            options["checkpoint"] = CheckpointConfig(storage=tmp, interval=timedelta(seconds=1))
        flow.run(**options)
    return common.latency_summary(sink.arrivals, n, rate, t0)


def weirflow_latency_fresh(n: int, rate: int, exactly_once: bool) -> dict[str, float | int]:
    """:func:`weirflow_latency` in a new spawned process."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(weirflow_latency, (n, rate, exactly_once))


def check(system: str, r: RunResult, n: int, reference: RunResult | None) -> list[str]:
    """Return the docs/workloads.md checks that ``r`` fails (empty when it passes)."""
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


def throughput(
    n: int, repeat: int, with_peers: bool, console: Console
) -> tuple[dict[str, list[RunResult]], list[str]]:
    """Run every system ``repeat`` times on ``n`` events; return the runs and failed checks."""
    runs: dict[str, list[RunResult]] = {}
    errors: list[str] = []
    jobs: list[tuple[str, Callable[[], RunResult]]] = [
        (s, lambda s=s: run_fresh(s, n)) for s in SYSTEMS
    ]
    if with_peers:
        jobs += [(name, lambda p=p: peer_result(run_peer(p, n))) for name, p in PEERS.items()]
    for system, job in jobs:
        for i in range(repeat):
            try:
                r = job()
            except PeerError as e:
                console.print(f"[yellow]{system} skipped:[/yellow] {e}")
                break
            console.print(
                f"{system} run {i + 1}/{repeat}: {n / r.seconds:,.0f} events/s, "
                f"{r.windows:,} windows, peak RSS {r.peak_rss_mb:.0f} MiB"
            )
            errors += check(system, r, n, runs[PLAIN][0] if runs.get(PLAIN) else None)
            runs.setdefault(system, []).append(r)
    return runs, errors


def latency(
    seconds: int, rate: int, quix_rate: int, with_peers: bool, console: Console
) -> dict[str, dict[str, Any]]:
    """Measure window latency for weirflow (and the peers); system → summary with ``rate``."""
    out: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[str, int, Callable[[int, int], dict[str, Any]]]] = [
        (WEIRFLOW, rate, lambda n, r: weirflow_latency_fresh(n, r, False)),
        (WEIRFLOW_EO, rate, lambda n, r: weirflow_latency_fresh(n, r, True)),
    ]
    if with_peers:
        for name, peer in PEERS.items():
            r = quix_rate if peer.family == "quix" else rate
            jobs.append((name, r, lambda n, r, p=peer: run_peer(p, n, r)["latency"]))
        jobs.append((WEIRFLOW_EO, quix_rate, lambda n, r: weirflow_latency_fresh(n, r, True)))
    for system, r, job in jobs:
        try:
            summary = job(max(r * seconds, MIN_LATENCY_EVENTS), r)
        except PeerError as e:
            console.print(f"[yellow]{system} latency skipped:[/yellow] {e}")
            continue
        console.print(
            f"{system} at {r:,} events/s: p50 {summary['p50_ms']:.1f} ms, "
            f"p99 {summary['p99_ms']:.1f} ms over {summary['windows']:,} windows"
        )
        out[f"{system} @ {r:,}/s"] = {"system": system, "rate": r, **summary}
    return out


def throughput_table(runs: dict[str, list[RunResult]], n: int, repeat: int) -> Table:
    """Median events/s, ratio to the plain loop and peak RSS per system."""
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
            f"{rates[system] / rates[PLAIN]:.2f}",
            f"{max(r.peak_rss_mb for r in rs):.0f}",
        )
    return table


def latency_table(results: dict[str, dict[str, Any]]) -> Table:
    """p50/p99/max latency per system and input rate."""
    table = Table(title="windowed_count latency: watermark passes window end → result at sink")
    for col in ("system", "input events/s", "windows", "p50 (ms)", "p99 (ms)", "max (ms)"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for r in results.values():
        table.add_row(
            r["system"],
            f"{r['rate']:,}",
            f"{r['windows']:,}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['max_ms']:.1f}",
        )
    return table


def verdicts(runs: dict[str, list[RunResult]], n: int) -> list[str]:
    """The targets, each met or not, with the figures."""
    rates = {s: statistics.median(n / r.seconds for r in rs) for s, rs in runs.items()}
    lines = []
    for system in (WEIRFLOW, WEIRFLOW_EO):
        if system in rates:
            ratio = rates[system] / rates[PLAIN]
            verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
            lines.append(f"target {system} ≥ {TARGET_RATIO} × plain loop: {verdict} ({ratio:.2f})")
    eo = rates.get(WEIRFLOW_EO)
    for name, peer in PEERS.items():
        if eo is not None and name in rates:
            want = TARGET_OVER_PEER[peer.family]
            ratio = eo / rates[name]
            verdict = "met" if ratio >= want else "NOT met"
            lines.append(
                f"target weirflow exactly-once ≥ {want:.0f} × {name}: {verdict} ({ratio:.1f})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 when an output check fails)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="events (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per system (default 3)")
    parser.add_argument("--quick", action="store_true", help="200,000 events, 1 run")
    parser.add_argument("--peers", action="store_true", help="add Bytewax and Quix Streams")
    parser.add_argument("--latency", action="store_true", help="measure window latency too")
    parser.add_argument("--latency-rate", type=int, default=LATENCY_RATE)
    parser.add_argument("--quix-latency-rate", type=int, default=QUIX_LATENCY_RATE)
    parser.add_argument(
        "--latency-seconds", type=int, default=None, help="length of a latency run (s)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    n = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    repeat = args.repeat or (1 if args.quick else 3)
    console = Console(width=140)
    runs, errors = throughput(n, repeat, args.peers, console)
    console.print(throughput_table(runs, n, repeat))
    for line in verdicts(runs, n):
        console.print(line)
    lat: dict[str, dict[str, Any]] = {}
    if args.latency:
        seconds = args.latency_seconds or (QUICK_LATENCY_SECONDS if args.quick else LATENCY_SECONDS)
        lat = latency(seconds, args.latency_rate, args.quix_latency_rate, args.peers, console)
        console.print(latency_table(lat))
    for e in errors:
        console.print(f"[red]check failed:[/red] {e}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "events": n,
                    "repeat": repeat,
                    "throughput": {
                        s: {
                            "events_per_s": statistics.median(n / r.seconds for r in rs),
                            "ratio_to_plain_loop": statistics.median(n / r.seconds for r in rs)
                            / statistics.median(n / r.seconds for r in runs[PLAIN]),
                            "peak_rss_mb": max(r.peak_rss_mb for r in rs),
                        }
                        for s, rs in runs.items()
                    },
                    "latency": lat,
                    "checks_failed": errors,
                },
                indent=2,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
