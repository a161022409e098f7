"""Running a job on several local worker processes (``--workers N``)."""

from __future__ import annotations

import math
import os
import threading

from weirflow.errors import ConfigError
from weirflow.records import JobResult
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.jobspec import JobSpec
from weirflow.runtime.launched import CoordinatorOptions, CoordinatorWatch, run_with_launcher
from weirflow.runtime.launcher import LocalLauncher
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.runtime.wire import new_secret


def resolve_workers(workers: int | str, parallelism: int) -> int:
    """Turn ``--workers`` into a process count.

    Args:
        workers: a count ≥ 1, or ``"auto"`` (one per core, at most ``parallelism``).
        parallelism: the job's parallelism (more workers than subtask indices idle).

    Raises:
        ConfigError: not a positive count nor ``auto``.
    """
    if workers == "auto":
        return max(1, min(os.cpu_count() or 1, parallelism))
    try:
        count = int(workers)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"--workers takes a count ≥ 1 or 'auto', got {workers!r}")
    return count


def run_on_local_workers(
    spec: JobSpec,
    workers: int,
    *,
    stop: threading.Event | None = None,
    listener: RunListener | None = None,
    heartbeat_interval_s: float = 1.0,
    heartbeat_timeout_s: float = 10.0,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    savepoints: SavepointRequests | None = None,
    watch: CoordinatorWatch | None = None,
) -> JobResult:
    """Run ``spec`` on ``workers`` worker processes of this machine under a coordinator here.

    The subtasks are spread evenly (``ceil(parallelism / workers)`` slots per
    worker); a worker that dies is replaced and the job restarts from its
    latest completed checkpoint.

    Args:
        spec: the job; ``spec.job`` must be importable by the worker processes.
        workers: worker processes, ≥ 1.
        stop: when set, the job takes a stop checkpoint and ends.
        listener: progress callbacks.
        heartbeat_interval_s: heartbeat period (s).
        heartbeat_timeout_s: silence after which a worker is given up (s).
        metrics_port: serve the coordinator's Prometheus ``/metrics`` (every
            worker's samples) on this port; ``None``: not served.
        metrics_host: the address ``/metrics`` binds.
        savepoints: savepoint requests from other threads (the control endpoint).
        watch: started with the coordinator, ended with it (the dashboard).

    Returns:
        The job's :class:`~weirflow.records.JobResult`.

    Raises:
        JobFailedError: the job failed and the restart strategy gave up.
        ConfigError: bad options.
    """
    if workers < 1:
        raise ConfigError(f"workers must be ≥ 1, got {workers}")
    secret = new_secret()
    launcher = LocalLauncher(workers, math.ceil(spec.parallelism / workers), secret, [])
    options = CoordinatorOptions(
        heartbeat_interval_s=heartbeat_interval_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        worker_wait_s=max(30.0, 3 * heartbeat_timeout_s),
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    return run_with_launcher(
        spec,
        launcher,
        secret,
        options,
        stop=stop,
        listener=listener,
        savepoints=savepoints,
        watch=watch,
    )
