"""``weirflow run --ray ADDRESS``: a job's workers as actors of a Ray cluster.

The coordinator runs in this process (the Ray driver), or with
``--ray-detached`` in a detached Ray actor that outlives this process; the
job's folder travels to the nodes with the actors (see
:mod:`weirflow.runtime.ray_cluster`). SIGTERM or Ctrl-C stops a job whose
coordinator runs here with a stop checkpoint; a detached job goes on.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
from datetime import timedelta
from enum import StrEnum
from typing import Any

from weirflow.api import load_dataflow, load_graph
from weirflow.cli.cluster import absolute_job_spec, run_rescaling
from weirflow.cli.run_surfaces import rules_watch
from weirflow.errors import ConfigError
from weirflow.metrics.autoscale import AutoscaleConfig
from weirflow.records import JobResult
from weirflow.runtime import RunListener, control
from weirflow.runtime.jobspec import JobSpec
from weirflow.runtime.launched import CoordinatorWatch
from weirflow.runtime.ray_cluster import RayCluster, run_rescalable_on_ray, submit_on_ray
from weirflow.runtime.savepoint_requests import SavepointRequests

LOCAL = "local"


class RayPlacement(StrEnum):
    """How the worker actors' placement group is laid over the nodes."""

    spread = "spread"
    pack = "pack"


def run_on_ray_cluster(
    job: str,
    cluster: RayCluster,
    spec_args: dict[str, Any],
    heartbeat_timeout_s: float,
    listener: RunListener,
    stop: threading.Event,
    metrics: tuple[int | None, str] = (None, "127.0.0.1"),
    wait: bool = True,
    watch: CoordinatorWatch | None = None,
    savepoints: SavepointRequests | None = None,
    autoscale: AutoscaleConfig | None = None,
    alerts: control.AlertRules | None = None,
) -> JobResult | None:
    """Run ``job`` on ``cluster`` until it ends or SIGTERM stops it.

    With ``cluster.detached`` the job is submitted to a detached coordinator
    actor; ``listener``, ``stop``, ``metrics`` and ``watch`` then do not apply,
    and the evaluation of ``alerts`` and the rescaling loop are built and run in
    that actor (``watch`` evaluates the alerts of a coordinator here). With
    ``autoscale``, a rescale decision stops the run with a stop checkpoint and
    the next run restores it at the new parallelism on as many worker actors as
    it needs at the first run's slots per actor, once Ray has freed the CPUs of
    the previous run's actors (waited for up to ``cluster.worker_wait``).

    Args:
        job: ``JOB.py[:NAME]``.
        cluster: where the workers run (address ``None``: a local Ray instance).
        spec_args: the other fields of :class:`~weirflow.runtime.jobspec.JobSpec`.
        heartbeat_timeout_s: silence after which a worker is given up (s).
        listener: progress callbacks.
        stop: set by SIGTERM or Ctrl-C (the job then stops with a stop checkpoint).
        metrics: ``(port, host)`` of the coordinator's ``/metrics`` (port ``None``: off).
        wait: (detached) wait for the job's end rather than return once it runs.
        watch: started with the coordinator here, ended with it (the dashboard).
        savepoints: savepoint requests to the job (the caller sets SIGTERM's handler then).
        autoscale: rescale on the sources' lag, or ``None``.
        alerts: (detached) the job's ``--alert`` rules, evaluated in the coordinator's
            actor, or ``None``.

    Returns:
        The job's result (of its last run); ``None`` for a detached job not waited for.

    Raises:
        ConfigError: bad options, Ray missing, the cluster unreachable or too small.
        JobFailedError: the job failed for good.
    """
    flow = load_dataflow(job)
    spec = JobSpec(job=absolute_job_spec(job), graph=flow.graph, **spec_args)
    # module functions and their arguments: Ray pickles them into a detached coordinator's actor
    rescaling = functools.partial(run_rescaling, autoscale=autoscale)
    if cluster.detached:
        return submit_on_ray(
            spec,
            cluster,
            load_graph,
            wait=wait,
            heartbeat_timeout_s=heartbeat_timeout_s,
            watch=functools.partial(rules_watch, alerts) if alerts is not None else None,
            rescaling=rescaling,
        )
    if savepoints is None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    return run_rescalable_on_ray(
        spec,
        cluster,
        load_graph,
        rescaling,
        stop=stop,
        savepoints=savepoints,
        watch=watch,
        listener=listener,
        heartbeat_timeout_s=heartbeat_timeout_s,
        metrics=metrics,
    )


def ray_cluster_option(
    address: str,
    workers: int,
    placement: RayPlacement,
    worker_wait: timedelta,
    runtime_env_json: str | None,
    detached: bool = False,
) -> RayCluster:
    """The :class:`RayCluster` of ``--ray ADDRESS`` (``local``: a Ray instance started here).

    Raises:
        ConfigError: ``runtime_env_json`` is not a JSON object.
    """
    try:
        runtime_env = json.loads(runtime_env_json) if runtime_env_json else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"--ray-runtime-env-json is not JSON: {e}") from e
    if not isinstance(runtime_env, dict):
        raise ConfigError('--ray-runtime-env-json takes a JSON object, e.g. {"env_vars": {}}')
    return RayCluster(
        address=None if address == LOCAL else address,
        workers=workers,
        placement=placement.value,  # type: ignore[arg-type]
        worker_wait=worker_wait,
        runtime_env=runtime_env,
        detached=detached,
    )
