"""Running a job on a Ray cluster: :class:`RayCluster` says where, :func:`run_on_ray` runs it.

The coordinator runs in this process (the Ray driver), or with
``detached=True`` in a detached Ray actor (:mod:`weirflow.runtime.ray_detached`)
that :func:`submit_on_ray` starts; in either place :func:`run_rescalable_on_ray`
runs the job again at another parallelism when a rescaling loop (the CLI's
``--autoscale``) asks for it. The workers are Ray actors that
:class:`~weirflow.runtime.ray_launcher.RayLauncher` starts. The
job's folder travels to the nodes as the actors' ``working_dir``, so the job
file and the modules beside it import there as they do here.

This module does not import ``ray``: the modules that do are imported only
when a job runs on Ray.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from weirflow.checkpoint import CheckpointStorage, resolve_job_key
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.records import JobResult
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.control import Status
from weirflow.runtime.jobspec import JobSpec
from weirflow.runtime.launched import CoordinatorOptions, CoordinatorWatch, run_with_launcher
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.runtime.wire import new_secret

log = logging.getLogger("weirflow.ray")

Placement = Literal["spread", "pack"]
INSTALL_HINT = "running on Ray needs Ray: pip install 'weirflow[ray]'"

# run(spec, workers, watch): one run of the job on that many worker actors
RayRun = Callable[[JobSpec, int, CoordinatorWatch | None], JobResult]
# rescaling(spec, workers, run, watch, stop, savepoints): runs the job through ``run`` once,
# or again after each rescale decision (the CLI's ``--autoscale`` loop); the last run's result
Rescaling = Callable[
    [JobSpec, int, RayRun, CoordinatorWatch | None, threading.Event, SavepointRequests | None],
    JobResult,
]


@dataclass(frozen=True)
class RayCluster:
    """Where and how a job's workers run on Ray.

    Attributes:
        address: ``"auto"`` (the cluster this machine belongs to),
            ``"HOST:PORT"`` of the head node, ``"ray://HOST:PORT"`` (Ray
            Client), or ``None`` (a Ray instance started on this machine).
        workers: worker actors, ≥ 1; each gets ``ceil(parallelism / workers)``
            slots and asks one CPU per slot.
        worker_resources: further resources per worker actor: ``GPU``,
            ``memory`` (bytes) or custom resource names; not ``CPU``.
        placement: ``"spread"`` the workers over nodes (best effort) or
            ``"pack"`` them onto as few nodes as possible.
        worker_wait: how long to wait for Ray to place the workers, and for
            a replacement after one was lost.
        runtime_env: more of the actors' Ray ``runtime_env`` (``pip``,
            ``py_modules``, ``env_vars``); ``working_dir`` defaults to the
            job file's folder and, when given, must contain the job file.
        detached: run the coordinator in a detached Ray actor named after the
            job, so the job outlives the process that submitted it;
            :func:`run_on_ray` still waits for its end, and its ``stop``,
            ``listener``, ``savepoints`` and ``metrics`` do not reach the actor.

    Raises:
        ConfigError: a field out of range.
    """

    address: str | None = None
    workers: int = 1
    worker_resources: Mapping[str, float] = field(default_factory=dict)
    placement: Placement = "spread"
    worker_wait: timedelta = timedelta(seconds=60)
    runtime_env: Mapping[str, Any] = field(default_factory=dict)
    detached: bool = False

    def __post_init__(self) -> None:
        if type(self.workers) is not int or self.workers < 1:
            raise ConfigError(f"RayCluster.workers takes a count ≥ 1, got {self.workers!r}")
        if self.placement not in ("spread", "pack"):
            raise ConfigError(f"RayCluster.placement is spread or pack, got {self.placement!r}")
        if "CPU" in self.worker_resources:
            raise ConfigError(
                "RayCluster.worker_resources takes no CPU: a worker asks one CPU per slot"
            )
        if self.worker_wait <= timedelta(0):
            raise ConfigError("RayCluster.worker_wait must be positive")


def job_files(job: str, runtime_env: Mapping[str, Any]) -> tuple[str, str]:
    """Where the job's files come from and how workers name the job there.

    Args:
        job: ``/abs/path/JOB.py[:NAME]`` as this process loads it.
        runtime_env: the user's ``runtime_env`` (its ``working_dir``, if any).

    Returns:
        ``(working_dir, job spec relative to it)``.

    Raises:
        ConfigError: a given ``working_dir`` does not contain the job file.
    """
    path_s, sep, name = job.partition(":") if not Path(job).exists() else (job, "", "")
    path = Path(path_s).resolve()
    folder = Path(runtime_env.get("working_dir", path.parent)).resolve()
    if not path.is_relative_to(folder):
        raise ConfigError(
            f"runtime_env working_dir {folder} does not contain the job file {path}: the "
            "workers import the job from there"
        )
    return str(folder), f"{path.relative_to(folder)}{sep}{name}"


def _import_ray_modules() -> tuple[Any, Any, Any]:
    try:
        from weirflow.runtime import ray_detached, ray_launcher, ray_preflight
    except ImportError as e:
        raise ConfigError(INSTALL_HINT) from e
    return ray_launcher, ray_preflight, ray_detached


def submit_on_ray(
    spec: JobSpec,
    cluster: RayCluster,
    load_graph: Callable[[str], LogicalGraph],
    *,
    wait: bool,
    heartbeat_timeout_s: float = 10.0,
    watch: Callable[[LogicalGraph, int], CoordinatorWatch] | None = None,
    rescaling: Rescaling | None = None,
) -> JobResult | None:
    """Run ``spec`` under a detached coordinator actor on the cluster (see :mod:`ray_detached`).

    The actor, named ``weirflow-job-NAME`` in Ray namespace ``weirflow``, runs
    :func:`run_on_ray` there; the job goes on when this process ends.

    Args:
        spec: the job; ``spec.job`` is ``/abs/path/JOB.py[:NAME]``.
        cluster: where and how the workers run (``detached`` is not consulted).
        load_graph: ``JOB.py[:NAME]`` → logical graph, run in the actors.
        wait: wait for the job's end (and return its result), or return once
            the coordinator actor runs.
        heartbeat_timeout_s: silence after which a worker is given up (s).
        watch: ``watch(graph, parallelism)`` → what watches the coordinator in the
            actor besides it (the job's alert rules), built there; or ``None``.
        rescaling: the loop that runs the job again at another parallelism, run in
            the actor (see :func:`run_rescalable_on_ray`); ``None``: one run.

    Returns:
        The job's result (of its last run) when ``wait``, else ``None``.

    Raises:
        ConfigError: Ray is not installed, the cluster is unreachable, a job of
            the same name runs already, or the coordinator actor did not start.
        JobFailedError: (with ``wait``) the job failed for good, or the
            coordinator actor died (submit again with ``restore="latest"``).
    """
    _, preflight, ray_detached = _import_ray_modules()
    working_dir, worker_job = job_files(spec.job, cluster.runtime_env)
    connected = preflight.connect(
        cluster.address, {**cluster.runtime_env, "working_dir": working_dir}
    )
    try:
        key = None
        if spec.checkpoint is not None:
            key = resolve_job_key(
                spec.checkpoint.key, spec.checkpoint.storage, spec.graph.name, create=False
            ).key
        # in the actor the job's files are its working_dir, already in effect
        inside = replace(cluster, detached=False, runtime_env={
            k: v for k, v in cluster.runtime_env.items() if k != "working_dir"
        })  # fmt: skip
        run = functools.partial(
            run_rescalable_on_ray, cluster=inside, load_graph=load_graph, rescaling=rescaling,
            heartbeat_timeout_s=heartbeat_timeout_s,
        )  # fmt: skip
        job, actor = ray_detached.submit(replace(spec, job=worker_job), run, load_graph, key, watch)
        log.info(
            "job %s runs under detached Ray actor %s (namespace %s, pid %d on node %s)",
            spec.graph.name, job.name, ray_detached.NAMESPACE, job.pid, job.node[:12],
        )  # fmt: skip
        return ray_detached.wait(job, actor) if wait else None
    finally:
        if connected:
            preflight.disconnect()


def run_rescalable_on_ray(
    spec: JobSpec,
    cluster: RayCluster,
    load_graph: Callable[[str], LogicalGraph],
    rescaling: Rescaling | None,
    *,
    stop: threading.Event,
    savepoints: SavepointRequests | None,
    watch: CoordinatorWatch | None,
    listener: RunListener | None = None,
    heartbeat_timeout_s: float = 10.0,
    metrics: tuple[int | None, str] = (None, "127.0.0.1"),
) -> JobResult:
    """Run ``spec`` under a coordinator in this process (the driver, or a detached
    coordinator actor) through ``rescaling``: each run is a :func:`run_on_ray` on the
    worker actors it asks for, at ``cluster``'s other settings.

    A run after the first waits up to ``cluster.worker_wait`` for its CPUs: Ray frees
    those of the previous run's placement group a moment after that run ended.

    Args:
        spec: the job; ``spec.job`` is ``/abs/path/JOB.py[:NAME]``.
        cluster: where and how the workers run; ``cluster.workers``: the first run's.
        load_graph: ``JOB.py[:NAME]`` → logical graph, run in the actors.
        rescaling: the loop deciding the runs; ``None``: one run.
        stop: when set, the running run takes a stop checkpoint and ends (a rescale
            decision sets it too, and the loop clears it for the next run).
        savepoints: savepoint requests from other threads, or ``None``.
        watch: started with each run's coordinator, ended with it.
        listener: progress callbacks.
        heartbeat_timeout_s: silence after which a worker is given up (s).
        metrics: ``(port, host)`` of the coordinator's ``/metrics`` (port ``None``: off).

    Returns:
        The result of the job's last run.

    Raises:
        ConfigError, JobFailedError: as :func:`run_on_ray`.
    """
    first = spec

    def run(spec: JobSpec, workers: int, watch: CoordinatorWatch | None) -> JobResult:
        return run_on_ray(
            spec,
            replace(cluster, workers=workers),
            load_graph,
            stop=stop,
            listener=listener,
            heartbeat_timeout_s=heartbeat_timeout_s,
            metrics=metrics,
            savepoints=savepoints,
            watch=watch,
            cpus_wait_s=0.0 if spec is first else cluster.worker_wait.total_seconds(),
        )

    if rescaling is None:
        return run(spec, cluster.workers, watch)
    return rescaling(spec, cluster.workers, run, watch, stop, savepoints)


def run_on_ray(
    spec: JobSpec,
    cluster: RayCluster,
    load_graph: Callable[[str], LogicalGraph],
    *,
    stop: threading.Event | None = None,
    listener: RunListener | None = None,
    heartbeat_timeout_s: float = 10.0,
    metrics: tuple[int | None, str] = (None, "127.0.0.1"),
    savepoints: SavepointRequests | None = None,
    watch: CoordinatorWatch | None = None,
    cpus_wait_s: float = 0.0,
) -> JobResult:
    """Run ``spec`` on worker actors of a Ray cluster under a coordinator in this process.

    Steps:
        1. connect to the cluster (:func:`ray_preflight.connect`);
        2. check that it has a CPU free per slot, and that a local checkpoint
           folder is shared by every node;
        3. start the coordinator, listening on this node's address, and the
           worker actors; run the job through failures (a lost worker actor
           is replaced, on another node if its node is gone);
        4. end the actors, and disconnect if step 1 connected.

    Args:
        spec: the job; ``spec.job`` is ``/abs/path/JOB.py[:NAME]``.
        cluster: where and how the workers run.
        load_graph: ``JOB.py[:NAME]`` → logical graph, run in the actors.
        stop: when set, the job takes a stop checkpoint and ends.
        listener: progress callbacks.
        savepoints: savepoint requests from other threads (the control endpoint).
        heartbeat_timeout_s: silence after which a worker is given up (s).
        metrics: ``(port, host)`` of the coordinator's ``/metrics`` (port ``None``: off).
        watch: started with the coordinator, ended with it (the dashboard).
        cpus_wait_s: how long to wait for the CPUs the job needs to be free (s); 0: refuse
            at once (a run after another, whose actors Ray is still ending, waits).

    Returns:
        The job's :class:`~weirflow.records.JobResult`.

    Raises:
        ConfigError: Ray is not installed, the cluster is unreachable or too
            small, or the checkpoint folder is not shared.
        JobFailedError: the job failed and the restart strategy gave up.
    """
    if cluster.detached:
        return submit_on_ray(
            spec, cluster, load_graph, wait=True, heartbeat_timeout_s=heartbeat_timeout_s
        )
    ray_launcher, preflight, _ = _import_ray_modules()
    working_dir, worker_job = job_files(spec.job, cluster.runtime_env)
    connected = preflight.connect(
        cluster.address, {**cluster.runtime_env, "working_dir": working_dir}
    )
    try:
        slots = math.ceil(spec.parallelism / cluster.workers)
        preflight.check_free_cpus(cluster.workers, slots, cpus_wait_s)
        key = None
        if spec.checkpoint is not None:
            storage = CheckpointStorage(spec.checkpoint.storage, spec.graph.name)
            preflight.check_shared_folder(storage)
            key = resolve_job_key(
                spec.checkpoint.key, spec.checkpoint.storage, spec.graph.name, create=False
            ).key
        secret = new_secret()
        wait_s = cluster.worker_wait.total_seconds()
        launcher = ray_launcher.RayLauncher(
            cluster.workers,
            ray_launcher.WorkerShape(slots, dict(cluster.worker_resources)),
            secret,
            load_graph,
            checkpoint_key=key,
            pack=cluster.placement == "pack",
            ready_timeout_s=wait_s,
        )
        options = CoordinatorOptions(
            listen=f"{preflight.node_address()}:0",
            heartbeat_interval_s=min(1.0, heartbeat_timeout_s / 4),
            heartbeat_timeout_s=heartbeat_timeout_s,
            worker_wait_s=wait_s,
            metrics_port=metrics[0],
            metrics_host=metrics[1],
        )
        return run_with_launcher(
            replace(spec, job=worker_job),
            launcher,
            secret,
            options,
            stop=stop,
            listener=listener,
            savepoints=savepoints,
            watch=watch,
        )
    finally:
        if connected:
            preflight.disconnect()


@contextlib.contextmanager
def _detached_actor(address: str | None, job: str) -> Iterator[tuple[Any, Any]]:
    """Connect to the cluster and find job ``job``'s detached coordinator actor; yield the
    :mod:`ray_detached` module and the actor's handle; disconnect at the end."""
    _, preflight, ray_detached = _import_ray_modules()
    connected = preflight.connect(address, {})
    try:
        yield ray_detached, ray_detached.find(job, address)
    finally:
        if connected:
            preflight.disconnect()


def detached_status(address: str | None, job: str) -> Status:
    """The status of job ``job``'s detached coordinator on the cluster at ``address``.

    Raises:
        ConfigError: Ray is not installed, the cluster is unreachable, or no
            detached coordinator of that job is alive there.
    """
    with _detached_actor(address, job) as (ray_detached, actor):
        return ray_detached.ask_status(job, actor)


def detached_savepoint(address: str | None, job: str, target: str | None, stop: bool) -> str:
    """Take a savepoint of job ``job`` under a detached coordinator; with ``stop`` the job
    stops with it and this returns once it ended.

    Returns:
        The savepoint folder's URL.

    Raises:
        ConfigError: as :func:`detached_status`.
        CheckpointError: no savepoint was written (the reason).
        JobFailedError: the job failed after its stop savepoint.
    """
    with _detached_actor(address, job) as (ray_detached, actor):
        return ray_detached.ask_savepoint(job, actor, target, stop)
