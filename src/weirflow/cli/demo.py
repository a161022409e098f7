"""``weirflow demo flights``: the main demo — real data, crashes injected, output verified.

Steps:
    1. ingest the NYC 2013 flights into the event log (once; progress bar);
    2. run the flights job under ``weirflow run`` with checkpoints on
       ``--workers`` processes (default: one per core), SIGKILLing a worker or
       the coordinator ``--chaos N`` times at random instants;
    3. verify every output against a plain batch computation of the same
       definitions and print a summary with the verdict;
    4. optionally plot the results.

Exit status 0 only when the verification passes.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from weirflow.cli.app import app
from weirflow.errors import WeirflowError
from weirflow.eventlog import EventLog, Record, UnknownTopicError
from weirflow.runtime.local_cluster import resolve_workers

demo_app = typer.Typer(name="demo", help="Demos on real data.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
err = Console(stderr=True)
_json_decode = msgspec.json.Decoder().decode


def _ingest(log_dir: Path, repeat: int, bad_rows: int) -> int:
    from weirflow.demos.flights import (
        DLQ_TOPIC,
        PARTITIONS,
        TOPIC,
        ingest_order,
        iter_raw_rows,
    )
    from weirflow.demos.flights.data import flight_record

    rows = ingest_order(iter_raw_rows())
    total = len(rows) * repeat + bad_rows
    with EventLog(log_dir) as lg:
        lg.create_topic(TOPIC, PARTITIONS)
        lg.create_topic(DLQ_TOPIC, 1, exist_ok=True)
        with Progress(
            TextColumn("ingesting flights"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} rows"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("ingest", total=total)
            for k in range(repeat):
                batch: list[Record] = []
                for row in rows:
                    if k:
                        row = dict(row, year=str(int(row["year"]) + k))
                    batch.append(flight_record(row))
                    if len(batch) == 5000:
                        lg.append(TOPIC, batch)
                        progress.advance(task, len(batch))
                        batch = []
                if batch:
                    lg.append(TOPIC, batch)
                    progress.advance(task, len(batch))
            if bad_rows:
                # Rows with the scheduled departure time missing: the job must dead-letter them.
                bad = [dict(r, sched_dep_time="NA") for r in rows[:bad_rows]]
                lg.append(TOPIC, [flight_record(r) for r in bad])
                progress.advance(task, len(bad))
    return total


def _read_topic(log_dir: Path, topic: str) -> list[bytes]:
    out: list[bytes] = []
    with EventLog(log_dir) as lg:
        for p in range(lg.partition_count(topic)):
            pos = lg.start_offset(topic, p)
            while True:
                batch = lg.read(topic, p, pos, max_records=10_000, max_bytes=64 << 20)
                if not batch:
                    break
                out.extend(r.value for r in batch if r.value is not None)
                pos = batch[-1].offset + 1
    return out


def _watch_progress(log_dir: Path, total: int, stop: threading.Event) -> None:
    from weirflow.demos.flights.job import GROUP

    with Progress(
        TextColumn("running  "),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} input records checkpointed"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("run", total=total)
        with EventLog(log_dir) as lg:
            while not stop.wait(0.5):
                lag = sum(row[4] for row in lg.lag(GROUP))
                progress.update(task, completed=max(0, total - lag))


@demo_app.command("flights")
def flights(
    log_dir: Annotated[Path, typer.Option(help="Event log holding the input.")] = Path(
        "weirflow-data/log"
    ),
    parallelism: Annotated[int, typer.Option(min=1, help="Subtasks per operator.")] = 2,
    chaos: Annotated[
        int, typer.Option(min=0, help="SIGKILL a worker or the coordinator N times.")
    ] = 0,
    workers: Annotated[
        str,
        typer.Option(
            help="Worker processes: a count, or auto (one per core, at most parallelism)."
        ),
    ] = "auto",
    repeat: Annotated[int, typer.Option(min=1, help="Replay the year K times.")] = 1,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the results.")] = None,
    checkpoint_interval: Annotated[str, typer.Option(help="Between checkpoints.")] = "200ms",
    seed: Annotated[int, typer.Option(help="Seed of the chaos delays.")] = 13,
    bad_rows: Annotated[int, typer.Option(min=0, help="Malformed rows to add at ingest.")] = 0,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Run the NYC flights job with crashes injected, then verify its output exactly."""
    try:
        processes = resolve_workers(workers, parallelism)
        ok = _demo(
            log_dir,
            _RunShape(parallelism, processes, chaos, checkpoint_interval, seed),
            repeat,
            plot,
            bad_rows,
        )
    except (WeirflowError, OSError) as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    raise typer.Exit(0 if ok else 1)


class _RunShape(NamedTuple):
    """How the demo runs the job: parallelism, worker processes, kills, checkpoints, seed."""

    parallelism: int
    workers: int
    chaos: int
    interval: str
    seed: int


def _restarts(run_log: str) -> int:
    """Restarts of the job from a checkpoint that ``run_log`` records (all kinds of run)."""
    return run_log.count("worker failed (") + len(
        re.findall(r"attempt \d+ of job \S+ failed", run_log)
    )


def _demo(
    log_dir: Path,
    shape: _RunShape,
    repeat: int,
    plot_path: Path | None,
    bad_rows: int,
) -> bool:
    from weirflow.demos.flights import TOPIC, Flight, FlightParseError, parse_record_value, verify
    from weirflow.demos.flights.data import DLQ_TOPIC
    from weirflow.demos.flights.job import OUTPUTS, late_topic, output_topic
    from weirflow.testing import ChaosConfig, run_under_chaos

    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with EventLog(log_dir) as lg:
            total = sum(p.record_count for p in lg.describe(TOPIC).partitions)
        err.print(f"input: {total:,} records already in {log_dir}/{TOPIC}")
    except UnknownTopicError:
        total = _ingest(log_dir, repeat, bad_rows)
        err.print(f"ingested {total:,} records into {log_dir}/{TOPIC}")
    run_dir = log_dir.parent / "demo-runs" / time.strftime("run-%Y%m%d-%H%M%S")
    out_log = run_dir / "log"
    run_dir.mkdir(parents=True, exist_ok=True)
    job = find_spec("weirflow.demos.flights.runnable").origin  # type: ignore[union-attr]
    args = [
        f"--parallelism={shape.parallelism}",
        f"--workers={shape.workers}",
        f"--checkpoint-dir={run_dir / 'checkpoints'}",
        f"--checkpoint-interval={shape.interval}",
        "--restart-delay=100ms",
        "--max-restarts=100",
    ]
    env = dict(
        os.environ, WEIRFLOW_LOG_DIR=str(log_dir.resolve()), WEIRFLOW_FLIGHTS_OUTPUT=str(out_log)
    )
    with EventLog(log_dir) as lg:
        from weirflow.demos.flights.job import GROUP

        lg.commit_offsets(GROUP, {(TOPIC, p): 0 for p in range(lg.partition_count(TOPIC))})
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_progress, args=(log_dir, total, stop), daemon=True)
    watcher.start()
    log_path = run_dir / "run.log"
    start = time.monotonic()
    try:
        if shape.chaos:
            # one process a kill, drawn among the workers and the coordinator (supervisor)
            report = run_under_chaos(
                str(job),
                args,
                ChaosConfig(
                    kills=shape.chaos,
                    seed=shape.seed,
                    target="any",
                    min_delay_s=1.0,
                    max_delay_s=3.0,
                ),
                log_path=log_path,
                env=env,
            )
            kills = report.kills
            coordinator_kills = report.supervisor_kills
        else:
            with open(log_path, "ab") as f:
                rc = subprocess.run(
                    [sys.executable, "-m", "weirflow.cli", "run", str(job), *args],
                    env=env,
                    stdout=f,
                    stderr=f,
                    check=False,
                ).returncode
            if rc != 0:
                raise WeirflowError(f"the job failed (exit {rc}); see {log_path}")
            kills = coordinator_kills = 0
    finally:
        stop.set()
        watcher.join()
    wall = time.monotonic() - start
    run_log = log_path.read_text(errors="replace")
    checkpoints = len(re.findall(r"checkpoint \d+ completed", run_log))
    # a coordinator killed is restarted by the harness, from the latest checkpoint too
    boss = "coordinator" if shape.workers > 1 else "supervisor"
    restarts = _restarts(run_log) + coordinator_kills

    err.print("verifying every output against a batch computation of the input …")
    flights_in: list[Flight] = []
    for raw in _read_topic(log_dir, TOPIC):
        with contextlib.suppress(FlightParseError):
            flights_in.append(parse_record_value(raw))
    dead = [_json_decode(v) for v in _read_topic(out_log, DLQ_TOPIC)]
    results: dict[str, list[dict[str, Any]]] = {}
    table = Table(title="weirflow demo flights", show_edge=False)
    for col in ("output", "results", "late", "windows", "verdict"):
        table.add_column(col, justify="left" if col in ("output", "verdict") else "right")
    ok = len(dead) == total - len(flights_in)
    for name in OUTPUTS:
        committed = [_json_decode(v) for v in _read_topic(out_log, output_topic(name))]
        late = [_json_decode(v) for v in _read_topic(out_log, late_topic(name))]
        results[name] = committed
        v = verify(name, committed, late, flights_in)  # type: ignore[arg-type]
        ok = ok and v.ok
        table.add_row(
            name,
            f"{len(committed):,}",
            f"{len(late):,}",
            f"{v.windows_expected:,}",
            "[green]exact[/]" if v.ok else f"[red]{v.summary()}[/]",
        )
    err.print(table)
    err.print(
        f"input records: {total:,}   dead letters: {len(dead):,}   "
        f"checkpoints completed: {checkpoints}   kills: {kills} ({kills - coordinator_kills} "
        f"of a worker, {coordinator_kills} of the {boss})   restarts: {restarts}\n"
        f"wall time: {wall:.1f} s   throughput: {total / wall:,.0f} events/s "
        f"(parallelism {shape.parallelism}, {shape.workers} worker process"
        f"{'es' if shape.workers > 1 else ''})   run folder: {run_dir}"
    )
    err.print(
        "[bold green]VERIFIED[/]: committed output equals the batch computation, nothing "
        "missing, nothing twice"
        if ok
        else "[bold red]VERIFICATION FAILED[/]"
    )
    if plot_path is not None:
        from weirflow.demos.flights.plot import plot

        plot(results["carrier_hourly"], results["origin_3h"], plot_path)
        err.print(f"plot written to {plot_path}")
    return ok
