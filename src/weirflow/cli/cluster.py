"""``weirflow worker``, ``weirflow coordinator``: jobs across processes.

``weirflow coordinator --listen HOST:PORT`` runs a job coordinator that
``weirflow worker --coordinator HOST:PORT`` processes join and
``weirflow run JOB.py --coordinator HOST:PORT`` submits jobs to; the job file
must be importable at the same path on the coordinator and on every worker,
and the checkpoint storage must be shared by all of them. A submitted job's
``--alert`` rules are evaluated here, in the coordinator, while it runs
(:func:`~weirflow.cli.run_surfaces.submitted_job_watch`), and its
``--autoscale`` bounds rescale it here (:func:`submitted_job_run`); what
submitting carries is :mod:`weirflow.cli.submit`'s.

The job's secret comes from ``--token-file`` (a file only the job's owner
can read) or, for workers started by ``weirflow run --workers N``, from the
environment; never from the command line, which every user can read.

Exit status: 0 when the coordinator shut the worker down; 1 when the
coordinator was lost (with ``--exit-on-loss``); 2 bad arguments, an
unreachable coordinator, or a secret the coordinator refuses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from weirflow.api import load_dataflow, load_graph
from weirflow.cli.app import app
from weirflow.cli.durations import parse_duration
from weirflow.cli.run_autoscale import CoordinatorAutoscaler
from weirflow.cli.run_surfaces import submitted_job_watch
from weirflow.errors import ConfigError
from weirflow.metrics import serve_metrics
from weirflow.metrics.autoscale import AutoscaleConfig
from weirflow.records import JobResult
from weirflow.runtime import RunListener, control, wall_clock_ms
from weirflow.runtime.cluster_metrics import cluster_registry
from weirflow.runtime.coordinator import JobCoordinator, JobSpec
from weirflow.runtime.launched import CoordinatorWatch
from weirflow.runtime.launcher import SECRET_ENV
from weirflow.runtime.local_cluster import run_on_local_workers
from weirflow.runtime.membership import WorkerStatus
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.runtime.service import OneRun, serve
from weirflow.runtime.wire import (
    FramedConnection,
    PeerAuthenticationError,
    dial,
    parse_address,
)
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


def _start(token_file: Path | None, address: str, option: str) -> bytes:
    """Configure logging, check ``address`` and read the secret of a long-running command.

    Raises:
        ConfigError: ``address`` is not HOST:PORT, or no usable secret.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        parse_address(address)
    except ValueError as e:
        raise ConfigError(f"{option}: {e}") from e
    return read_secret(token_file)


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
    connect_timeout: Annotated[
        str, typer.Option(help="How long to keep dialling a coordinator that is not up yet.")
    ] = "30s",
    exit_on_loss: Annotated[bool, typer.Option(hidden=True)] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Join a job coordinator and host up to SLOTS subtasks of its job."""
    try:
        secret = _start(token_file, coordinator, "--coordinator")
        w = Worker(
            coordinator,
            secret,
            slots,
            load_graph,
            host_address,
            reconnect=not exit_on_loss,
            connect_timeout_s=parse_duration(connect_timeout).total_seconds(),
        )
        try:
            raise typer.Exit(w.serve())
        except OSError as e:
            raise ConfigError(
                f"cannot reach the coordinator at {coordinator} (tried for {connect_timeout}): "
                f"{e.strerror or e}; is `weirflow coordinator` running there, and is the "
                "address right?"
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
    stop: threading.Event,
    metrics: tuple[int | None, str] = (None, "127.0.0.1"),
    savepoints: SavepointRequests | None = None,
    watch: CoordinatorWatch | None = None,
    autoscale: AutoscaleConfig | None = None,
) -> JobResult:
    """Run ``job`` on ``workers`` local worker processes until it ends or SIGTERM stops it.

    With ``autoscale``, a rescale decision stops the run with a stop checkpoint
    and the next run restores it at the new parallelism, on as many workers as
    it needs at the first run's slots per worker.

    Args:
        job: ``JOB.py[:NAME]``.
        workers: worker processes.
        spec_args: the other fields of :class:`~weirflow.runtime.jobspec.JobSpec`.
        heartbeat_timeout_s: silence after which a worker is given up (s).
        listener: progress callbacks.
        stop: set by SIGTERM or Ctrl-C (the job then stops with a stop checkpoint).
        metrics: ``(port, host)`` of the coordinator's ``/metrics`` (port ``None``: off).
        savepoints: savepoint requests to the job (the caller sets SIGTERM's handler then).
        watch: started with the coordinator, ended with it (the dashboard).
        autoscale: rescale on the sources' lag, or ``None``.

    Returns:
        The result of the job's last run (the one at its final parallelism).

    Raises:
        ConfigError: bad options; JobFailedError: the job failed for good.
    """
    flow = load_dataflow(job)
    if savepoints is None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    spec = JobSpec(job=absolute_job_spec(job), graph=flow.graph, **spec_args)

    def run(spec: JobSpec, workers: int, watch: CoordinatorWatch | None) -> JobResult:
        return run_on_local_workers(
            spec,
            workers,
            stop=stop,
            listener=listener,
            heartbeat_interval_s=min(1.0, heartbeat_timeout_s / 4),
            heartbeat_timeout_s=heartbeat_timeout_s,
            metrics_port=metrics[0],
            metrics_host=metrics[1],
            savepoints=savepoints,
            watch=watch,
        )

    return run_rescaling(spec, workers, run, watch, stop, savepoints, autoscale)


def run_rescaling(
    spec: JobSpec,
    workers: int,
    run: Callable[[JobSpec, int, CoordinatorWatch | None], JobResult],
    watch: CoordinatorWatch | None,
    stop: threading.Event,
    savepoints: SavepointRequests | None,
    autoscale: AutoscaleConfig | None,
    capacity: Callable[[JobCoordinator], int] | None = None,
) -> JobResult:
    """Run ``spec`` on ``workers`` workers through ``run``, and with ``autoscale`` run it
    again after each rescale decision: from the stop checkpoint the decision took, at the
    new parallelism, on as many workers as that needs at the first run's slots per worker.

    Args:
        spec: the job.
        workers: workers of the first run.
        run: one run of a job on a number of workers under a coordinator watched by a
            watch (the local processes' or the Ray actors' launcher).
        watch: started with each run's coordinator, ended with it (the dashboard, alerts).
        stop: set by SIGTERM or Ctrl-C, and by a rescale decision (cleared for the next run).
        savepoints: savepoint requests to the job; a stop submitted there ends the job.
        autoscale: rescale on the sources' lag, or ``None`` (one run).
        capacity: the slots a cluster of given workers offers (a scale-up stays within
            them), or ``None`` when ``run`` starts the workers it needs.

    Returns:
        The result of the last run (the one at the job's final parallelism).

    Raises:
        ConfigError, JobFailedError: as ``run`` raises them.
    """
    scaler = (
        CoordinatorAutoscaler(autoscale, spec.parallelism, wall_clock_ms, capacity)
        if autoscale is not None
        else None
    )
    slots = math.ceil(spec.parallelism / workers)
    while True:
        result = run(
            spec,
            workers,
            watch if scaler is None else both(watch, scaler.watch(spec.graph.name, stop)),
        )
        decision = scaler.take() if scaler is not None else None
        if decision is None or (savepoints is not None and savepoints.stop_submitted):
            return result
        stop.clear()
        spec = dataclasses.replace(spec, parallelism=decision.target, restore="latest")
        workers = math.ceil(decision.target / slots)
        log.info(
            "rescaling to parallelism %d on %d workers from the stop checkpoint",
            decision.target,
            workers,
        )


def submitted_job_run(
    submit: control.Submit,
    spec: JobSpec,
    run: OneRun,
    watch: CoordinatorWatch | None,
    stop: threading.Event,
    savepoints: SavepointRequests,
) -> JobResult:
    """How ``weirflow coordinator`` runs a submitted job: once, or with the submission's
    ``--autoscale`` bounds once per parallelism (:func:`run_rescaling`; the cluster's
    workers are already there: a scale-up stays within the slots they offer)."""
    return run_rescaling(
        spec,
        spec.parallelism,
        lambda spec, _workers, watch: run(spec, watch),
        watch,
        stop,
        savepoints,
        submit.autoscale,
        cluster_slots,
    )


def cluster_slots(coordinator: JobCoordinator) -> int:
    """The slots of the workers registered with ``coordinator`` and not lost."""
    # a copy: the coordinator's thread adds workers while this one reads
    workers = list(coordinator.workers.values())
    return sum(w.slots for w in workers if w.status is not WorkerStatus.LOST)


def both(first: CoordinatorWatch | None, second: CoordinatorWatch) -> CoordinatorWatch:
    """One watch doing ``first`` (if any), then ``second``; ended in the reverse order."""

    def watch(coordinator: JobCoordinator) -> Callable[[], None]:
        end_first = first(coordinator) if first is not None else None
        end_second = second(coordinator)

        def end() -> None:
            end_second()
            if end_first is not None:
                end_first()

        return end

    return watch


def _serve_coordinator(
    listen: str,
    secret: bytes,
    heartbeat_timeout_s: float,
    worker_wait_s: float,
    metrics: tuple[int | None, str],
) -> None:
    coordinator = JobCoordinator(
        secret,
        listen,
        heartbeat_interval_s=min(1.0, heartbeat_timeout_s / 4),
        heartbeat_timeout_s=heartbeat_timeout_s,
        worker_wait_s=worker_wait_s,
    )
    signal.signal(signal.SIGTERM, lambda *_: coordinator.close())
    signal.signal(signal.SIGINT, lambda *_: coordinator.close())
    server = (
        serve_metrics(cluster_registry(coordinator), metrics[0], metrics[1])
        if metrics[0] is not None
        else None
    )
    coordinator.start()
    log.info("coordinator listening on %s", coordinator.address)
    try:
        serve(coordinator, load_graph, submitted_job_watch, submitted_job_run)
    finally:
        coordinator.close()
        if server is not None:
            server.close()


@app.command("coordinator")
def coordinator_command(
    listen: Annotated[str, typer.Option(help="HOST:PORT that workers and clients connect to.")],
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the job's secret (shared with workers).")
    ] = None,
    heartbeat_timeout: Annotated[
        str, typer.Option(help="Silence after which a worker is given up.")
    ] = "10s",
    worker_wait: Annotated[
        str, typer.Option(help="How long a restart waits for enough free slots.")
    ] = "60s",
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve Prometheus /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics.")] = "127.0.0.1",
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Run a job coordinator: workers join it, `weirflow run --coordinator` submits jobs."""
    try:
        secret = _start(token_file, listen, "--listen")
        try:
            _serve_coordinator(
                listen,
                secret,
                parse_duration(heartbeat_timeout).total_seconds(),
                parse_duration(worker_wait).total_seconds(),
                (metrics_port, metrics_host),
            )
        except OSError as e:
            raise ConfigError(f"cannot listen on {listen}: {e.strerror or e}") from e
    except ConfigError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def dial_coordinator(address: str, secret: bytes) -> FramedConnection:
    """An authenticated connection to the ``weirflow coordinator`` at ``address``.

    Raises:
        ConfigError: ``address`` is not HOST:PORT, or nothing answers there.
        PeerAuthenticationError: the coordinator refuses the secret.
    """
    try:
        return dial(address, secret, f"coordinator {address}")
    except ValueError as e:
        raise ConfigError(f"--coordinator: {e}") from e
    except OSError as e:
        raise ConfigError(
            f"cannot reach the coordinator at {address}: {e.strerror or e}; is "
            "`weirflow coordinator` running there, and is the address right?"
        ) from e
