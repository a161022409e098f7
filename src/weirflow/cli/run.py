"""``weirflow run``: run a job in a worker process under a supervisor.

The supervisor starts the worker (this same command with ``--worker``) and
waits. When the worker dies — any signal, SIGKILL included — or exits with a
job failure, the supervisor asks the restart strategy and starts a new
worker that restores from the latest completed checkpoint. SIGTERM or
Ctrl-C is forwarded to the worker, which takes a final checkpoint, lets the
sinks commit, and exits 0. The worker dies with the supervisor
(``PR_SET_PDEATHSIG``), so no orphan keeps writing.

Observability: the worker samples the job every 500 ms (never per record)
and, on request, serves Prometheus metrics (``--metrics-port``) and the
dashboard (``--ui-port``); on a terminal it shows a live progress line, and
``--log-format json`` turns every log line and the progress into JSON. The
supervisor tells each worker how many restarts came before it and how long
recovery took (environment variables), so those metrics survive worker deaths.

Exit status: 0 finished or stopped cleanly; 1 the job failed and the
restart strategy gave up, or it failed with an error that recurs on every
attempt (:func:`weirflow.errors.is_retriable`), which is not restarted; 2 bad
arguments or configuration (also an unusable checkpoint storage, found
before the first record). Between worker and supervisor, 3 says "failed,
not retriable".
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
import traceback
from datetime import timedelta
from enum import StrEnum
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from weirflow.checkpoint import (
    KEY_ENV,
    CheckpointConfig,
    CheckpointStorage,
    NoCheckpointError,
)
from weirflow.cli.app import app
from weirflow.cli.cluster import absolute_job_spec, read_secret, run_on_workers, submit_job
from weirflow.cli.durations import parse_duration
from weirflow.cli.jobs import load_dataflow
from weirflow.cli.run_options import (
    StateBackendKind,
    check_fresh_start,
    checkpoint_key_env,
    config_message,
    restore_option,
    state_backend_option,
)
from weirflow.cli.run_surfaces import Surfaces, make_observer
from weirflow.errors import ConfigError, WeirflowError, is_retriable
from weirflow.metrics import (
    DEFAULT_HOST,
    JsonFormatter,
    names,
)
from weirflow.records import JobResult
from weirflow.runtime import RestartStrategy, RunListener, RuntimeOptions, control, wall_clock_ms
from weirflow.runtime.local_cluster import resolve_workers
from weirflow.runtime.run import run_job
from weirflow.state import StateBackend

_MAX_RESTARTS = "Restarts allowed (failure-rate: failures per interval)."
EXIT_FAILED = 1
EXIT_CONFIG = 2
# a worker's failure that recurs on every attempt: the supervisor does not restart it
EXIT_NOT_RETRIABLE = 3
_PR_SET_PDEATHSIG = 1
# also in weirflow.web.app, which needs the web extra: the CLI checks before importing it
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")


class Guarantee(StrEnum):
    """Delivery guarantees."""

    exactly_once = "exactly_once"
    at_least_once = "at_least_once"
    at_most_once = "at_most_once"


class LogFormat(StrEnum):
    """Log line formats."""

    text = "text"
    json = "json"


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


def _configure_logging(log_format: LogFormat) -> None:
    if log_format is LogFormat.json:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


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


def _summary(result: JobResult, log_format: LogFormat, stopped: bool) -> None:
    how = "stopped" if stopped else "finished"
    if log_format is LogFormat.json:
        log.info(
            how,
            extra={
                "fields": {
                    "job": result.job,
                    "operators": {k: c._asdict() for k, c in result.operators.items()},
                    "checkpoints_completed": result.checkpoints_completed,
                    "duration_ms": result.duration_ms,
                }
            },
        )
        return
    table = Table(title=f"job {result.job}: {how}", show_edge=False)
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
    surfaces: dict[str, Any],
    backend: StateBackend,
) -> int:
    started_ms = wall_clock_ms()
    _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    flow = load_dataflow(job)
    observer = make_observer(flow, parallelism, started_ms, _PrintingListener())
    shown = Surfaces(observer, **surfaces)
    try:
        if config is None:
            result = run_job(
                flow.graph,
                parallelism,
                128,
                guarantee=guarantee.value,
                stop=stop,
                listener=observer,
                state_backend=backend,
            )
        else:
            result = flow.run(
                parallelism,
                checkpoint=config,
                restore=restore,
                stop=stop,
                listener=observer,
                state_backend=backend,
            )
    finally:
        shown.close()
    _summary(result, surfaces["log_format"], stop.is_set())
    return 0


def _supervise(
    argv: list[str],
    strategy: RestartStrategy,
    storage: CheckpointStorage | None,
    restore: str | None,
    worker_env: dict[str, str] | None = None,
) -> int:
    tracker = strategy.tracker()
    recovery_ms = 0
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
        env = {
            **os.environ,
            **(worker_env or {}),
            names.ENV_RESTARTS: str(attempt),
            names.ENV_RECOVERY_MS: str(recovery_ms),
        }
        proc = subprocess.Popen([sys.executable, "-m", "weirflow.cli", "run", *args], env=env)
        current[:] = [proc]
        rc = proc.wait()
        died = int(time.time() * 1000)
        if rc == 0:
            return 0
        if rc == EXIT_NOT_RETRIABLE:
            # the worker printed why; another attempt would fail the same way
            return EXIT_FAILED
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
        log.warning("worker failed (%s); restart %d in %d ms", cause, attempt, wait_ms)
        time.sleep(wait_ms / 1000)
        if storage is not None and max(storage.completed_checkpoints(), default=0) > baseline:
            restore = "latest"
        recovery_ms += int(time.time() * 1000) - died


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
    checkpoint_key_file: Annotated[
        str | None,
        typer.Option(
            help="Key file (hex, mode 0600) that signs checkpoints (default: "
            f"${KEY_ENV}, else one generated next to the checkpoint folder)."
        ),
    ] = None,
    guarantee: Annotated[Guarantee, typer.Option(help="Delivery guarantee.")] = (
        Guarantee.exactly_once
    ),
    restore: Annotated[
        str | None,
        typer.Option(
            help="latest, latest-or-fresh, none (fresh over earlier checkpoints), or a "
            "checkpoint/savepoint path. Without it a job with checkpoints is refused."
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Same as --restore none.")] = False,
    allow_duplicates_after_fallback: Annotated[
        bool,
        typer.Option(
            help="Restore an older checkpoint than the sinks committed (the newer ones are "
            "unusable), writing their output again."
        ),
    ] = False,
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
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve Prometheus /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics.")] = DEFAULT_HOST,
    ui_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve the dashboard on this port.")
    ] = None,
    ui_host: Annotated[str, typer.Option(help="Address of the dashboard.")] = DEFAULT_HOST,
    ui_token: Annotated[
        str | None,
        typer.Option(
            envvar="WEIRFLOW_UI_TOKEN",
            help="Token the dashboard requires (needed when --ui-host is not loopback).",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option(help="text (with a live progress line) or json.")
    ] = (LogFormat.text),
    workers: Annotated[
        str, typer.Option(help="Worker processes on this machine: a count, or auto (one per core).")
    ] = "1",
    coordinator: Annotated[
        str | None, typer.Option(help="Submit to a running `weirflow coordinator` at HOST:PORT.")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the job's secret (with --coordinator).")
    ] = None,
    heartbeat_timeout: Annotated[
        str, typer.Option(help="Silence after which a worker is given up (with --workers).")
    ] = "10s",
    state_backend: Annotated[
        StateBackendKind, typer.Option(help="Where keyed state lives: memory or rocksdb (disk).")
    ] = StateBackendKind.memory,
    state_dir: Annotated[
        str | None,
        typer.Option(help="RocksDB's local folder (default weirflow-data/state)."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    worker: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Run a job under a supervisor that restarts it from its latest checkpoint."""
    _configure_logging(log_format)
    try:
        interval = parse_duration(checkpoint_interval)
        restore = restore_option(restore, fresh)
        backend = state_backend_option(state_backend, state_dir)
        config = (
            None
            if guarantee is Guarantee.at_most_once
            else CheckpointConfig(
                storage=checkpoint_dir,
                interval=interval,
                mode=guarantee.value,
                allow_duplicates_after_fallback=allow_duplicates_after_fallback,
            )
        )
        if ui_port is not None and any(find_spec(m) is None for m in ("starlette", "uvicorn")):
            raise ConfigError(
                "--ui-port needs the dashboard's packages: pip install 'weirflow[web]'"
            )
        if ui_port is not None and not ui_token and ui_host not in _LOOPBACK:
            raise ConfigError(
                f"--ui-host {ui_host} exposes the dashboard beyond this machine: "
                "give it a --ui-token"
            )
        surfaces = {
            "metrics_port": metrics_port,
            "metrics_host": metrics_host,
            "ui_port": ui_port,
            "ui_host": ui_host,
            "ui_token": ui_token,
            "log_format": log_format,
        }
        if worker:
            raise typer.Exit(
                _run_worker(job, parallelism, config, guarantee, restore, surfaces, backend)
            )
        strategy = build_strategy(
            restart_strategy,
            max_restarts,
            parse_duration(restart_delay),
            parse_duration(max_restart_delay),
            parse_duration(failure_interval),
        )
        stop = threading.Event()
        if state_backend is not StateBackendKind.memory and coordinator is not None:
            raise ConfigError(
                "--state-backend rocksdb cannot be submitted to a --coordinator yet; run the "
                "job with --workers"
            )
        if config is not None and (
            coordinator is not None or resolve_workers(workers, parallelism) > 1
        ):
            # workers find the key as this process does: through the environment they inherit
            os.environ.update(
                checkpoint_key_env(checkpoint_dir, load_dataflow(job).name, checkpoint_key_file)
            )
        if coordinator is not None:
            result = submit_job(
                coordinator,
                read_secret(token_file),
                control.Submit(
                    job=absolute_job_spec(job),
                    parallelism=parallelism,
                    max_parallelism=128,
                    checkpoint=config,
                    guarantee=guarantee.value,
                    restore=restore,
                    restart=strategy,
                ),
                stop,
            )
            _summary(result, log_format, stop.is_set())
            raise typer.Exit(0)
        processes = resolve_workers(workers, parallelism)
        if processes > 1:
            result = run_on_workers(
                job,
                processes,
                {
                    "parallelism": parallelism,
                    "checkpoint": config,
                    "guarantee": guarantee.value,
                    "restore": restore,
                    "restart": strategy,
                    "options": RuntimeOptions(state_backend=backend),
                },
                parse_duration(heartbeat_timeout).total_seconds(),
                _PrintingListener(),
                stop,
                (metrics_port, metrics_host),
            )
            _summary(result, log_format, stop.is_set())
            raise typer.Exit(0)
        flow = load_dataflow(job)
        storage = CheckpointStorage(checkpoint_dir, flow.name) if config else None
        if storage is not None:
            storage.check_writable()
        if storage is not None and restore is None:
            check_fresh_start(storage)
        argv = [
            job,
            f"--parallelism={parallelism}",
            f"--checkpoint-dir={checkpoint_dir}",
            f"--checkpoint-interval={checkpoint_interval}",
            f"--guarantee={guarantee.value}",
            f"--metrics-host={metrics_host}",
            f"--ui-host={ui_host}",
            f"--log-format={log_format.value}",
            f"--state-backend={state_backend.value}",
            *([f"--state-dir={state_dir}"] if state_dir is not None else []),
            *([f"--metrics-port={metrics_port}"] if metrics_port is not None else []),
            *([f"--ui-port={ui_port}"] if ui_port is not None else []),
        ] + (["--debug"] if debug else [])
        if allow_duplicates_after_fallback:
            argv.append("--allow-duplicates-after-fallback")
        # secrets go to the worker in its environment, not in its (world-readable) arguments
        worker_env = {"WEIRFLOW_UI_TOKEN": ui_token} if ui_token else {}
        if storage is not None and restore == "latest" and not storage.completed_checkpoints():
            # before a key file is generated for a run that cannot start
            raise NoCheckpointError(flow.name, storage.root_url, [])
        if config is not None:
            worker_env |= checkpoint_key_env(checkpoint_dir, flow.name, checkpoint_key_file)
        raise typer.Exit(_supervise(argv, strategy, storage, restore, worker_env))
    except typer.Exit:
        raise
    except ConfigError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(config_message(e))}")
        raise typer.Exit(EXIT_CONFIG) from None
    except WeirflowError as e:
        if worker and not is_retriable(e):
            if debug:
                # the traceback, and still the status that keeps the supervisor from restarting
                traceback.print_exc()
            err.print(f"[red]error:[/] {escape(str(e))} (not retriable: the job is not restarted)")
            raise typer.Exit(EXIT_NOT_RETRIABLE) from None
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(EXIT_FAILED) from None
