"""``weirflow run``: run a job in a worker process under a supervisor.

The supervisor starts the worker (this same command with ``--worker``) and
waits. When the worker dies — any signal, SIGKILL included — or exits with a
job failure, the supervisor asks the restart strategy and starts a new
worker that restores from the latest completed checkpoint. SIGTERM or
Ctrl-C is forwarded to the worker, which takes a final checkpoint, lets the
sinks commit, and exits 0. The worker dies with the supervisor
(``PR_SET_PDEATHSIG``), so no orphan keeps writing.

Exit status: 0 finished or stopped cleanly; 1 the job failed and the
restart strategy gave up; 2 bad arguments or configuration.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from weirflow.checkpoint import CheckpointConfig, CheckpointStorage
from weirflow.cli.app import app
from weirflow.cli.durations import parse_duration
from weirflow.cli.jobs import load_dataflow
from weirflow.errors import ConfigError, WeirflowError
from weirflow.records import JobResult
from weirflow.runtime import RestartStrategy, RunListener

_MAX_RESTARTS = "Restarts allowed (failure-rate: failures per interval)."
EXIT_FAILED = 1
EXIT_CONFIG = 2
_PR_SET_PDEATHSIG = 1
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")


class Guarantee(StrEnum):
    """Delivery guarantees."""

    exactly_once = "exactly_once"
    at_least_once = "at_least_once"
    at_most_once = "at_most_once"


class Strategy(StrEnum):
    """Restart strategies."""

    fixed_delay = "fixed-delay"
    exponential_backoff = "exponential-backoff"
    failure_rate = "failure-rate"
    none = "none"


def build_strategy(
    kind: Strategy, max_restarts: int, delay: timedelta, max_delay: timedelta, interval: timedelta
) -> RestartStrategy:
    """Map the CLI options onto a :class:`~weirflow.RestartStrategy`."""
    if kind is Strategy.fixed_delay:
        return RestartStrategy.fixed_delay(max_restarts, delay)
    if kind is Strategy.exponential_backoff:
        return RestartStrategy.exponential_backoff(delay, max_delay, max_restarts=max_restarts)
    if kind is Strategy.failure_rate:
        return RestartStrategy.failure_rate(max_restarts, interval, delay)
    return RestartStrategy.none()


class _PrintingListener(RunListener):
    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        where = f"checkpoint {restored_from}" if restored_from is not None else "a fresh start"
        log.info("worker %d: starting from %s", os.getpid(), where)

    def checkpoint_completed(self, completed: Any) -> None:
        m = completed.manifest
        log.info(
            "checkpoint %d completed (%d ms, %d bytes)", m.checkpoint_id, m.duration_ms, m.size
        )


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the supervisor) dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="weirflow-parent-watch").start()


def _summary(result: JobResult) -> None:
    table = Table(title=f"job {result.job}: finished", show_edge=False)
    for col in ("operator", "in", "out", "filtered", "late", "dead letters"):
        table.add_column(col, justify="right" if col != "operator" else "left")
    for name, c in result.operators.items():
        table.add_row(
            name,
            str(c.records_in),
            str(c.records_out),
            str(c.filtered),
            str(c.late),
            str(c.dead_lettered),
        )
    err.print(table)
    err.print(
        f"checkpoints completed: {result.checkpoints_completed}   "
        f"wall time: {result.duration_ms / 1000:.1f} s"
    )


def _run_worker(
    job: str,
    parallelism: int,
    config: CheckpointConfig | None,
    guarantee: Guarantee,
    restore: str | None,
) -> int:
    _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    flow = load_dataflow(job)
    if config is None:
        from weirflow.execution import execute

        result = execute(flow.graph, parallelism, 128, guarantee=guarantee.value, stop=stop)
    else:
        result = flow.run(
            parallelism,
            checkpoint=config,
            restore=restore,
            stop=stop,
            listener=_PrintingListener(),
        )
    _summary(result)
    return 0


def _supervise(
    argv: list[str],
    strategy: RestartStrategy,
    storage: CheckpointStorage | None,
    restore: str | None,
) -> int:
    tracker = strategy.tracker()
    baseline = max(storage.completed_checkpoints(), default=0) if storage else 0
    stopping = threading.Event()
    current: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for p in current:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    attempt = 0
    while True:
        args = [*argv, "--worker"]
        if restore:
            args += ["--restore", restore]
        started = int(time.time() * 1000)
        proc = subprocess.Popen([sys.executable, "-m", "weirflow.cli", "run", *args])
        current[:] = [proc]
        rc = proc.wait()
        if rc == 0:
            return 0
        if rc == EXIT_CONFIG or stopping.is_set():
            return rc if rc > 0 else EXIT_FAILED
        cause = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
        wait_ms = tracker.on_failure(int(time.time() * 1000), started)
        if wait_ms is None:
            err.print(
                f"[red]error:[/] the worker failed ({cause}) and the restart strategy gives up "
                f"after {tracker.restarts} restart(s)"
            )
            return EXIT_FAILED
        attempt += 1
        err.print(f"worker failed ({cause}); restart {attempt} in {wait_ms} ms")
        time.sleep(wait_ms / 1000)
        if storage is not None and max(storage.completed_checkpoints(), default=0) > baseline:
            restore = "latest"


@app.command("run")
def run(
    job: Annotated[str, typer.Argument(help="JOB.py, or JOB.py:NAME to pick one Dataflow.")],
    parallelism: Annotated[int, typer.Option(min=1, help="Subtasks per operator.")] = 1,
    checkpoint_dir: Annotated[
        str, typer.Option(help="Checkpoint storage: a folder or fsspec URL.")
    ] = "weirflow-data/checkpoints",
    checkpoint_interval: Annotated[
        str, typer.Option(help="Time between checkpoints, e.g. 500ms, 1s.")
    ] = "1s",
    guarantee: Annotated[Guarantee, typer.Option(help="Delivery guarantee.")] = (
        Guarantee.exactly_once
    ),
    restore: Annotated[
        str | None,
        typer.Option(help="latest, latest-or-fresh, or a checkpoint/savepoint path."),
    ] = None,
    restart_strategy: Annotated[Strategy, typer.Option(help="What to do when the worker dies.")] = (
        Strategy.fixed_delay
    ),
    max_restarts: Annotated[
        int, typer.Option(min=0, help="Restarts (or failures per interval).")
    ] = 10,
    restart_delay: Annotated[
        str, typer.Option(help="Wait before a restart (initial wait).")
    ] = "1s",
    max_restart_delay: Annotated[str, typer.Option(help="Cap for exponential backoff.")] = "1m",
    failure_interval: Annotated[
        str, typer.Option(help="Window of the failure-rate strategy.")
    ] = "1m",
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    worker: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Run a job under a supervisor that restarts it from its latest checkpoint."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        interval = parse_duration(checkpoint_interval)
        config = (
            None
            if guarantee is Guarantee.at_most_once
            else CheckpointConfig(storage=checkpoint_dir, interval=interval, mode=guarantee.value)
        )
        if worker:
            raise typer.Exit(_run_worker(job, parallelism, config, guarantee, restore))
        strategy = build_strategy(
            restart_strategy,
            max_restarts,
            parse_duration(restart_delay),
            parse_duration(max_restart_delay),
            parse_duration(failure_interval),
        )
        flow = load_dataflow(job)
        storage = CheckpointStorage(checkpoint_dir, flow.name) if config else None
        argv = [
            job,
            f"--parallelism={parallelism}",
            f"--checkpoint-dir={checkpoint_dir}",
            f"--checkpoint-interval={checkpoint_interval}",
            f"--guarantee={guarantee.value}",
        ] + (["--debug"] if debug else [])
        raise typer.Exit(_supervise(argv, strategy, storage, restore))
    except typer.Exit:
        raise
    except ConfigError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_CONFIG) from None
    except WeirflowError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_FAILED) from None
