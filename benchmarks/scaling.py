"""Scaling out: the same jobs at parallelism 2 on one worker process and on two.

Each workload runs under ``weirflow run JOB --parallelism 2 --workers W
--checkpoint-interval 1s`` (exactly-once checkpoints, a fresh checkpoint
folder per run) with W = 1 (today's single worker under its supervisor) and
W = 2 (two worker processes; ``key_by`` edges between them go over
authenticated loopback TCP):

* ``windowed_count`` (WORKLOADS.md, 2,000,000 events);
* Nexmark q0, q4, q5, q8 (1,000,000 events, the deterministic generator,
  two splits);
* the flights demo job on all of ``flights.csv``.

Inputs other than Nexmark sit in an embedded event log written once before
the timed runs; every output goes to an exactly-once ``EventLogSink`` and
is verified after the runs (:mod:`scaling_inputs`), so a fast wrong run
fails the benchmark (exit status 1). Two rates per run: events over the
time from process start to exit (interpreter start, imports, worker
processes and final commit included), and events over the job's own
reported wall time (the steady part). The ratio is workers 2 / workers 1.

Also: the flights outputs recomputed as a plain single-process batch (read
the CSV, parse, aggregate), one cross-process channel alone
(:mod:`scaling_channel`), and the checkpoint durations (p50/p99) of the
2-worker runs, from their ``checkpoint N completed (X ms, ...)`` log lines.

Targets: ≥ 1.6 × with 2 workers for windowed_count, q5 and flights;
streaming flights with 2 workers faster than the batch recomputation;
≥ 1 M records/s on one channel.

Usage: python benchmarks/scaling.py [--quick] [--json PATH] [--events N]
       [--nexmark-events N] [--flights-rows N] [--channel-records N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scaling_channel  # noqa: E402
import scaling_inputs as inputs  # noqa: E402

PARALLELISM = 2
WORKERS = (1, 2)
QUERIES = ("q0", "q4", "q5", "q8")
FULL = {"events": 2_000_000, "nexmark": 1_000_000, "flights": None, "channel": 5_000_000}
QUICK = {"events": 200_000, "nexmark": 100_000, "flights": 50_000, "channel": 1_000_000}
TARGET_RATIO = 1.6
RATIO_TARGETS = ("windowed_count", "nexmark q5", "flights")
TARGET_CHANNEL = 1_000_000
RUN_TIMEOUT_S = 1800
_CHECKPOINT = re.compile(r"checkpoint (\d+) completed \((\d+) ms")


class JobRun(NamedTuple):
    """One run of one workload.

    Attributes:
        workload: its name.
        workers: worker processes.
        events: input events.
        seconds: process start → exit, s.
        job_seconds: the job's own wall time (its final summary), s.
        cpu_seconds: CPU time (user + system) of the command and all its worker
            processes, s; unlike wall time it does not depend on what else the
            machine runs, so it shows the cost of distribution.
        results: output records committed.
        checkpoints: checkpoints completed.
        checkpoint_ms: durations of the completed checkpoints, ms.
        errors: failed output checks (empty: verified).
    """

    workload: str
    workers: int
    events: int
    seconds: float
    job_seconds: float
    cpu_seconds: float
    results: int
    checkpoints: int
    checkpoint_ms: list[int]
    errors: list[str]


class Workload(NamedTuple):
    """A job to run, with its input size, environment and output check.

    Attributes:
        name: shown in the table.
        job: the job file.
        events: input events.
        env: environment variables configuring the job (beside the output log).
        output_env: the variable naming the output log.
        topics: output topics to create before a run (those the job file does not create).
        check: ``output log -> (results, errors)``.
    """

    name: str
    job: Path
    events: int
    env: dict[str, str]
    output_env: str
    topics: list[str]
    check: Callable[[Path], tuple[int, list[str]]]


def run_job(
    w: Workload,
    workers: int,
    run_dir: Path,
    launch: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> JobRun:
    """Run ``w`` on ``workers`` worker processes in a fresh ``run_dir`` and check its output.

    ``launch`` goes before the command (``ip netns exec NS``), ``extra`` after
    its options (``--ray HEAD ...``).

    Raises:
        RuntimeError: the run failed (its last log lines are in the message).
    """
    out_log = run_dir / "out"
    inputs.create_output(out_log, w.topics)
    cmd = [
        *launch,
        sys.executable,
        "-m",
        "weirflow.cli",
        "run",
        str(w.job),
        f"--parallelism={PARALLELISM}",
        f"--workers={workers}",
        f"--checkpoint-dir={run_dir / 'checkpoints'}",
        "--checkpoint-interval=1s",
        "--log-format=json",
        *extra,
    ]
    env = {**os.environ, **w.env, w.output_env: str(out_log)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{w.name} on {workers} worker(s) failed ({proc.returncode}):\n{tail}")
    durations, job_ms, checkpoints = [], None, 0
    for line in (proc.stderr + proc.stdout).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("message", "") if isinstance(entry, dict) else ""
        if m := _CHECKPOINT.match(message):
            durations.append(int(m[2]))
        elif message == "finished":
            job_ms, checkpoints = entry["duration_ms"], entry["checkpoints_completed"]
    errors = [] if job_ms is not None else ["no final job summary in the log"]
    results, failed = w.check(out_log)
    return JobRun(
        w.name,
        workers,
        w.events,
        seconds,
        (job_ms or 0) / 1000,
        cpu,
        results,
        checkpoints,
        durations,
        errors + failed,
    )


def workloads(
    work: Path,
    sizes: dict[str, Any],
    console: Console,
    queries: Sequence[str] = QUERIES,
    flights: bool = True,
) -> list[Workload]:
    """Write the inputs into ``work`` once and describe the workloads (the Nexmark
    ``queries``, and flights when ``flights``)."""
    jobs = HERE / "jobs"
    wc_log = work / "windowed_count-input"
    n = sizes["events"]
    t = time.perf_counter()
    inputs.write_windowed_count(wc_log, n)
    fl_log = work / "flights-input"
    rows = inputs.write_flights(fl_log, sizes["flights"]) if flights else 0
    console.print(
        f"inputs written in {time.perf_counter() - t:.1f} s: {n:,} windowed_count events, "
        f"{rows:,} flights"
    )
    expected = inputs.nexmark_expected(queries, sizes["nexmark"])
    out: list[Workload] = [
        Workload(
            "windowed_count",
            jobs / "scaling_windowed_count.py",
            n,
            {"WF_SCALING_INPUT": str(wc_log)},
            "WF_SCALING_OUTPUT",
            ["results"],
            lambda out_log: inputs.check_windowed_count(out_log, n),
        )
    ]
    for q in queries:
        out.append(
            Workload(
                f"nexmark {q}",
                jobs / "scaling_nexmark.py",
                sizes["nexmark"],
                {
                    "WF_SCALING_QUERY": q,
                    "WF_SCALING_EVENTS": str(sizes["nexmark"]),
                    "WF_SCALING_SPLITS": str(PARALLELISM),
                },
                "WF_SCALING_OUTPUT",
                ["results"],
                lambda out_log, q=q: inputs.check_nexmark(out_log, q, expected[q]),
            )
        )
    if not flights:
        return out
    out.append(
        Workload(
            "flights",
            Path(find_spec("weirflow.demos.flights.runnable").origin),  # type: ignore[arg-type,union-attr]
            rows,
            {"WEIRFLOW_LOG_DIR": str(fl_log)},
            "WEIRFLOW_FLIGHTS_OUTPUT",
            [],  # the job file creates its output topics
            lambda out_log: inputs.check_flights(fl_log, out_log, rows),
        )
    )
    return out


def percentile(values: list[int], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``, ``None`` when empty."""
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def ratios(runs: list[JobRun]) -> dict[str, dict[str, float]]:
    """Workload → ``{"process": r, "job": r}``, events/s with 2 workers over 1 worker."""
    by = {(r.workload, r.workers): r for r in runs}
    out = {}
    for (name, workers), r2 in by.items():
        r1 = by.get((name, 1))
        if workers == 2 and r1 is not None:
            out[name] = {
                "process": r1.seconds / r2.seconds,
                "job": r1.job_seconds / r2.job_seconds if r2.job_seconds else 0.0,
            }
    return out


def table(
    runs: list[JobRun],
    batch: tuple[float, int],
    channel: scaling_channel.ChannelRun,
    checkpoint_ms: list[int],
) -> Table:
    """The results as one rich table."""
    t = Table(title=f"Scaling: parallelism {PARALLELISM}, exactly-once 1 s checkpoints")
    for col in ("workload", "events", "workers", "events/s (start→exit)", "×", "events/s (job)"):
        t.add_column(col, justify="left" if col == "workload" else "right")
    for col in ("×", "CPU s", "results", "checkpoints", "ckpt p50/p99 ms", "output"):
        t.add_column(col, justify="right")
    ratio = ratios(runs)
    for r in runs:
        x = ratio.get(r.workload) if r.workers == 2 else None
        t.add_row(
            r.workload,
            f"{r.events:,}",
            str(r.workers),
            f"{r.events / r.seconds:,.0f}",
            f"{x['process']:.2f}" if x else "",
            f"{r.events / r.job_seconds:,.0f}" if r.job_seconds else "-",
            f"{x['job']:.2f}" if x else "",
            f"{r.cpu_seconds:.1f}",
            f"{r.results:,}",
            str(r.checkpoints),
            _p50_p99(r.checkpoint_ms),
            "[red]WRONG[/red]" if r.errors else "verified",
        )
    flights = [r for r in runs if r.workload == "flights"]
    if flights:
        t.add_row(
            "flights, batch (1 process)",
            f"{flights[0].events:,}",
            "-",
            f"{flights[0].events / batch[0]:,.0f}",
            "",
            "",
            "",
            f"{batch[0]:.1f}",
            f"{batch[1]:,} windows",
            "-",
            "-",
            "-",
        )
    t.add_row(
        "one channel (records/s)",
        f"{channel.records:,}",
        "2 proc.",
        f"{channel.records_per_s:,.0f}",
        *[""] * 4,
        f"{channel.frames:,} frames",
        "-",
        "-",
        "received all",
    )
    t.add_row(
        f"all 2-worker checkpoints ({len(checkpoint_ms)})",
        "",
        "2",
        "",
        *[""] * 6,
        _p50_p99(checkpoint_ms),
        "",
    )
    return t


def _p50_p99(durations: list[int]) -> str:
    p50, p99 = percentile(durations, 0.5), percentile(durations, 0.99)
    return "-" if p50 is None or p99 is None else f"{p50:.0f} / {p99:.0f}"


def verdicts(
    runs: list[JobRun], batch: tuple[float, int], channel: scaling_channel.ChannelRun
) -> list[str]:
    """Each target, met or not, with its figure."""
    lines = []
    ratio = ratios(runs)
    for name in RATIO_TARGETS:
        if name in ratio:
            x = ratio[name]
            met = "met" if x["process"] >= TARGET_RATIO else "NOT met"
            lines.append(
                f"target {name} ≥ {TARGET_RATIO}× with 2 workers: {met} "
                f"({x['process']:.2f}× start→exit, {x['job']:.2f}× job time)"
            )
    flights2 = [r for r in runs if r.workload == "flights" and r.workers == 2]
    if flights2:
        f = flights2[0]
        met = "met" if f.seconds < batch[0] else "NOT met"
        lines.append(
            f"target streaming flights (2 workers) faster than the batch recomputation: {met} "
            f"({f.seconds:.1f} s start→exit, {f.job_seconds:.1f} s job, batch {batch[0]:.1f} s)"
        )
    met = "met" if channel.records_per_s >= TARGET_CHANNEL else "NOT met"
    lines.append(f"target ≥ 1 M records/s on one channel: {met} ({channel.records_per_s:,.0f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run everything; return 1 when an output check fails, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (make bench)")
    parser.add_argument("--events", type=int, default=None, help="windowed_count events")
    parser.add_argument("--nexmark-events", type=int, default=None)
    parser.add_argument("--flights-rows", type=int, default=None, help="default: all")
    parser.add_argument("--channel-records", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key, value in (
        ("events", args.events),
        ("nexmark", args.nexmark_events),
        ("flights", args.flights_rows),
        ("channel", args.channel_records),
    ):
        if value is not None:
            sizes[key] = value
    console = Console(width=190)
    load = os.getloadavg()
    console.print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    runs: list[JobRun] = []
    with tempfile.TemporaryDirectory(prefix="weirflow-scaling-") as tmp:
        work = Path(tmp)
        for w in workloads(work, sizes, console):
            for workers in WORKERS:
                r = run_job(w, workers, work / f"{w.name.replace(' ', '-')}-w{workers}")
                console.print(
                    f"{w.name}, {workers} worker(s): {r.events / r.seconds:,.0f} events/s "
                    f"start→exit, {r.events / max(r.job_seconds, 1e-9):,.0f} job, "
                    f"{r.cpu_seconds:.1f} CPU s, "
                    f"{r.results:,} results, {r.checkpoints} checkpoints"
                )
                runs.append(r)
    batch = inputs.flights_batch(sizes["flights"])
    console.print(f"flights batch recomputation: {batch[0]:.2f} s, {batch[1]:,} windows")
    channel = scaling_channel.measure(sizes["channel"])
    console.print(f"one channel: {channel.records_per_s:,.0f} records/s")
    checkpoint_ms = [d for r in runs if r.workers == 2 for d in r.checkpoint_ms]
    console.print(table(runs, batch, channel, checkpoint_ms))
    lines = verdicts(runs, batch, channel)
    for line in lines:
        console.print(line)
    load = os.getloadavg()
    console.print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    errors = [f"{r.workload}, {r.workers} worker(s): {e}" for r in runs for e in r.errors]
    for e in errors:
        console.print(f"[red]check failed:[/red] {e}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "parallelism": PARALLELISM,
                    "sizes": sizes,
                    "runs": [
                        {
                            **r._asdict(),
                            "events_per_s": r.events / r.seconds,
                            "job_events_per_s": r.events / r.job_seconds if r.job_seconds else 0,
                            "verified": not r.errors,
                        }
                        for r in runs
                    ],
                    "ratios": ratios(runs),
                    "flights_batch": {"seconds": batch[0], "windows": batch[1]},
                    "channel": {**channel._asdict(), "records_per_s": channel.records_per_s},
                    "checkpoint_ms": {
                        "count": len(checkpoint_ms),
                        "p50": percentile(checkpoint_ms, 0.5),
                        "p99": percentile(checkpoint_ms, 0.99),
                        "median": statistics.median(checkpoint_ms) if checkpoint_ms else None,
                    },
                    "targets": lines,
                    "checks_failed": errors,
                },
                indent=2,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
