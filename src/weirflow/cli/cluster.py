"""``weirflow worker``: a worker process that hosts subtasks for a job coordinator.

The job's secret comes from ``--token-file`` (a file only the job's owner
can read) or, for workers started by ``weirflow run --workers N``, from the
environment; never from the command line, which every user can read.

Exit status: 0 when the coordinator shut the worker down; 1 when the
coordinator was lost (with ``--exit-on-loss``); 2 bad arguments, an
unreachable coordinator, or a secret the coordinator refuses.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from weirflow.cli.app import app
from weirflow.cli.jobs import load_dataflow
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.records import JobResult
from weirflow.runtime import RunListener
from weirflow.runtime.coordinator import JobSpec
from weirflow.runtime.launcher import SECRET_ENV
from weirflow.runtime.local_cluster import run_on_local_workers
from weirflow.runtime.wire import PeerAuthenticationError, parse_address
from weirflow.runtime.worker import CoordinatorLostError, Worker

err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")


def read_secret(token_file: Path | None) -> bytes:
    """The job's secret from ``token_file``, else from ``WEIRFLOW_CLUSTER_SECRET`` (hex).

    Raises:
        ConfigError: neither is given, the file cannot be read or is empty.
    """
    if token_file is not None:
        try:
            secret = token_file.read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"cannot read --token-file {token_file}: {e.strerror}") from e
        if not secret:
            raise ConfigError(f"--token-file {token_file} is empty: put the job's secret in it")
        return secret
    hex_secret = os.environ.get(SECRET_ENV)
    if hex_secret:
        try:
            return bytes.fromhex(hex_secret)
        except ValueError as e:
            raise ConfigError(f"{SECRET_ENV} is not hex") from e
    raise ConfigError(
        "a worker needs the job's secret: pass --token-file FILE (the same file as the "
        "coordinator's)"
    )


def _load_graph(job: str) -> LogicalGraph:
    return load_dataflow(job).graph


@app.command("worker")
def worker(
    coordinator: Annotated[str, typer.Option(help="HOST:PORT of the job coordinator.")],
    slots: Annotated[int, typer.Option(min=1, help="Subtask indices this worker hosts.")] = 1,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the job's secret (same as the coordinator's).")
    ] = None,
    host_address: Annotated[
        str, typer.Option(help="Address of this host that other workers connect to.")
    ] = "127.0.0.1",
    exit_on_loss: Annotated[bool, typer.Option(hidden=True)] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Join a job coordinator and host up to SLOTS subtasks of its job."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        secret = read_secret(token_file)
        try:
            parse_address(coordinator)
        except ValueError as e:
            raise ConfigError(f"--coordinator: {e}") from e
        w = Worker(
            coordinator, secret, slots, _load_graph, host_address, reconnect=not exit_on_loss
        )
        try:
            raise typer.Exit(w.serve())
        except OSError as e:
            raise ConfigError(
                f"cannot reach the coordinator at {coordinator}: {e.strerror or e}; is "
                "`weirflow coordinator` running there, and is the address right?"
            ) from e
    except typer.Exit:
        raise
    except (ConfigError, PeerAuthenticationError) as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    except CoordinatorLostError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] lost the coordinator: {e}")
        raise typer.Exit(1) from None


def absolute_job_spec(job: str) -> str:
    """``JOB.py[:NAME]`` with an absolute path, so that workers in other folders find it."""
    path, sep, name = job.partition(":") if not Path(job).exists() else (job, "", "")
    return f"{Path(path).resolve()}{sep}{name}"


def run_on_workers(
    job: str,
    workers: int,
    spec_args: dict[str, Any],
    heartbeat_timeout_s: float,
    listener: RunListener,
) -> JobResult:
    """Run ``job`` on ``workers`` local worker processes until it ends or SIGTERM stops it.

    Args:
        job: ``JOB.py[:NAME]``.
        workers: worker processes.
        spec_args: the other fields of :class:`~weirflow.runtime.coordinator.JobSpec`.
        heartbeat_timeout_s: silence after which a worker is given up (s).
        listener: progress callbacks.

    Returns:
        The job's result.

    Raises:
        ConfigError: bad options; JobFailedError: the job failed for good.
    """
    flow = load_dataflow(job)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    spec = JobSpec(job=absolute_job_spec(job), graph=flow.graph, **spec_args)
    return run_on_local_workers(
        spec,
        workers,
        stop=stop,
        listener=listener,
        heartbeat_interval_s=min(1.0, heartbeat_timeout_s / 4),
        heartbeat_timeout_s=heartbeat_timeout_s,
    )
