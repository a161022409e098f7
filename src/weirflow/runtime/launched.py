"""Running a job under a coordinator in this process whose launcher starts the workers.

The one home of what every launcher shares: the coordinator, its heartbeat
settings, the optional ``/metrics`` endpoint, what watches the coordinator
(the dashboard), and closing all of it (workers included) however the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from weirflow.metrics import serve_metrics
from weirflow.records import JobResult
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.cluster_metrics import cluster_registry
from weirflow.runtime.coordinator import JobCoordinator, JobSpec
from weirflow.runtime.launcher import Launcher
from weirflow.runtime.savepoint_requests import SavepointRequests

#: Given the coordinator before it starts (to add listeners, serve a view of it);
#: returns what ends that when the run ends.
CoordinatorWatch = Callable[[JobCoordinator], Callable[[], None]]


@dataclass(frozen=True)
class CoordinatorOptions:
    """How the coordinator in this process watches its workers.

    Attributes:
        listen: ``HOST:PORT`` the workers dial (port 0: any free port); the
            host must be reachable from every worker.
        heartbeat_interval_s: heartbeat period (s).
        heartbeat_timeout_s: silence after which a worker is given up (s).
        worker_wait_s: how long an attempt waits for enough free slots (s).
        metrics_port: serve the coordinator's Prometheus ``/metrics`` (every
            worker's samples) on this port; ``None``: not served.
        metrics_host: the address ``/metrics`` binds.
    """

    listen: str = "127.0.0.1:0"
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    worker_wait_s: float = 30.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


def run_with_launcher(
    spec: JobSpec,
    launcher: Launcher,
    secret: bytes,
    options: CoordinatorOptions,
    *,
    stop: threading.Event | None = None,
    listener: RunListener | None = None,
    savepoints: SavepointRequests | None = None,
    watch: CoordinatorWatch | None = None,
) -> JobResult:
    """Run ``spec`` under a coordinator here on the workers ``launcher`` starts.

    Args:
        spec: the job.
        launcher: starts, replaces and ends the workers.
        secret: the job's secret (the launcher hands it to the workers).
        options: the coordinator's settings.
        stop: when set, the job takes a stop checkpoint and ends.
        listener: progress callbacks.
        savepoints: savepoint requests from other threads (the control endpoint).
        watch: started with the coordinator, ended with it (the dashboard).

    Returns:
        The job's :class:`~weirflow.records.JobResult`.

    Raises:
        JobFailedError: the job failed and the restart strategy gave up.
        ConfigError: bad options, the launcher could not start the workers, or
            ``watch`` could not start (a dashboard port taken).
        OSError: ``options.listen`` cannot be bound.
    """
    coordinator = JobCoordinator(
        secret,
        options.listen,
        launcher=launcher,
        heartbeat_interval_s=options.heartbeat_interval_s,
        heartbeat_timeout_s=options.heartbeat_timeout_s,
        worker_wait_s=options.worker_wait_s,
    )
    try:
        server = (
            serve_metrics(cluster_registry(coordinator), options.metrics_port, options.metrics_host)
            if options.metrics_port is not None
            else None
        )
        unwatch = watch(coordinator) if watch is not None else None
        try:
            coordinator.start()
            return coordinator.run(spec, stop=stop, listener=listener, savepoints=savepoints)
        finally:
            if unwatch is not None:
                unwatch()
            if server is not None:
                server.close()
    finally:
        coordinator.close()
