"""A job's coordinator as a detached Ray actor: the job outlives the process that submitted it.

The submitting process connects to the cluster (its ``runtime_env`` carries
the job's files), creates :class:`DetachedCoordinator` with
``lifetime="detached"``, named after the job in the ``weirflow`` Ray
namespace, and may leave. The actor runs the job exactly as a driver does
(:func:`weirflow.runtime.ray_cluster.run_rescalable_on_ray`), rescaling loop
included: its worker actors and their placement groups belong to it, so they
end with it. Ray does not restart it (``max_restarts=0``): after its process
died, submitting the job again with ``restore="latest"`` continues from the
latest checkpoint.

Any process connected to the cluster finds the actor by the job's name
(:func:`find`) and asks it for the coordinator's status (:func:`ask_status`)
or for a savepoint, optionally stopping the job with it (:func:`ask_savepoint`):
``weirflow status``, ``savepoint`` and ``stop`` with ``--ray ADDRESS``.

The actor gets only the job's name in its files, the fields of its
:class:`~weirflow.runtime.jobspec.JobSpec` and its checkpoint key (through
Ray's control plane, as worker actors do); it loads the graph itself. Records
never pass through Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import ray

from weirflow.errors import CheckpointError, ConfigError, JobFailedError, WeirflowError
from weirflow.graph import LogicalGraph
from weirflow.records import JobResult
from weirflow.runtime.control import Status
from weirflow.runtime.coordinator import JobCoordinator
from weirflow.runtime.endpoint import SAVEPOINT_WAIT_S
from weirflow.runtime.jobspec import JobSpec
from weirflow.runtime.launched import CoordinatorWatch
from weirflow.runtime.ray_launcher import adopt_checkpoint_key
from weirflow.runtime.savepoint_requests import SavepointRequests

log = logging.getLogger("weirflow.ray")

NAMESPACE = "weirflow"
# How long a finished detached job keeps its name for a late ``wait`` to collect the result (s).
_LINGER_S = 30.0
# How often a savepoint request checks that the job still runs (s).
_POLL_S = 0.5


def actor_name(job: str) -> str:
    """The Ray actor name of job ``job``'s detached coordinator."""
    return f"weirflow-job-{job}"


@dataclass(frozen=True)
class DetachedJob:
    """A job submitted to run under a detached coordinator actor.

    Attributes:
        name: the coordinator actor's name (in Ray namespace ``weirflow``).
        pid: the actor's process id on its node.
        node: the Ray node id the actor runs on.
    """

    name: str
    pid: int
    node: str


class DetachedCoordinator:
    """A Ray actor's body: one job's coordinator, run in a thread from construction on.

    The job starts in the constructor, so it runs on whether or not anyone
    calls the actor again. When it ends the actor ends itself, after the
    result was collected by :meth:`result` or ``_LINGER_S`` seconds passed.

    Args:
        job: ``JOB.py[:NAME]`` relative to the actor's ``working_dir``.
        spec_fields: the other fields of the job's ``JobSpec`` (not ``job``, ``graph``).
        run: ``run(spec, stop=event, savepoints=requests, watch=watch)`` runs the spec on Ray
            (:func:`weirflow.runtime.ray_cluster.run_rescalable_on_ray` with the cluster,
            ``load_graph``, the rescaling loop and timeouts bound).
        load_graph: ``JOB.py[:NAME]`` → logical graph.
        checkpoint_key: the job's checkpoint key, or ``None``.
        watch: ``watch(graph, parallelism)`` → what else watches the coordinator in the
            actor (the job's ``--alert`` rules), or ``None``.
    """

    def __init__(
        self,
        job: str,
        spec_fields: Mapping[str, Any],
        run: Callable[..., JobResult],
        load_graph: Callable[[str], LogicalGraph],
        checkpoint_key: bytes | None,
        watch: Callable[[LogicalGraph, int], CoordinatorWatch] | None = None,
    ) -> None:
        adopt_checkpoint_key(checkpoint_key)
        self._spec = JobSpec(job=job, graph=load_graph(job), **spec_fields)
        # built here, in the actor: its alert thread belongs to this process
        self._also_watch = (
            watch(self._spec.graph, self._spec.parallelism) if watch is not None else None
        )
        self._run = run
        self._stop = threading.Event()
        self._done = threading.Event()
        self._collected = threading.Event()
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._savepoints = SavepointRequests()
        self._coordinator: JobCoordinator | None = None
        threading.Thread(target=self._serve, name="weirflow-job", daemon=True).start()

    def _serve(self) -> None:
        try:
            self._result = self._run(
                self._spec, stop=self._stop, savepoints=self._savepoints, watch=self._watch
            )
            log.info("detached job %s ended: %s", self._spec.graph.name, self._result)
        except BaseException as e:  # handed to whoever waits; the actor ends either way
            log.exception("detached job %s failed", self._spec.graph.name)
            self._error = e
        self._done.set()
        if self._collected.wait(_LINGER_S):
            # the result's reply must reach the waiter first, and the waiter ends the actor;
            # this is for a waiter that died before it could
            threading.Event().wait(_LINGER_S)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _watch(self, coordinator: JobCoordinator) -> Callable[[], None]:
        self._coordinator = coordinator
        return self._also_watch(coordinator) if self._also_watch is not None else lambda: None

    def status(self) -> Status | None:
        """The coordinator's status (``None`` before the coordinator exists)."""
        return self._coordinator.status() if self._coordinator is not None else None

    def savepoint(self, target: str | None, stop: bool) -> str:
        """Take a savepoint into ``target`` (``None``: the default folder), then stop if ``stop``.

        Returns:
            The savepoint folder's URL.

        Raises:
            CheckpointError: no savepoint was written (the reason), or none within 600 s.
        """
        done = self._savepoints.submit(target, stop)
        deadline = time.monotonic() + SAVEPOINT_WAIT_S
        while time.monotonic() < deadline:
            try:
                return done.result(timeout=_POLL_S)
            except TimeoutError:
                if self._done.is_set():
                    # no run takes requests any more: fail this one (if still queued)
                    self._savepoints.fail_queued("the job ended")
        raise CheckpointError(f"no savepoint within {SAVEPOINT_WAIT_S:.0f} s")

    def where(self) -> tuple[int, str]:
        """``(process id, Ray node id)`` of this actor."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def stop(self) -> None:
        """Stop the job with a stop checkpoint."""
        self._stop.set()

    def result(self) -> JobResult:
        """Wait for the job to end and return its result.

        Raises:
            JobFailedError, ConfigError: as :func:`run_on_ray`.
        """
        self._done.wait()
        self._collected.set()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def submit(
    spec: JobSpec,
    run: Callable[..., JobResult],
    load_graph: Callable[[str], LogicalGraph],
    checkpoint_key: bytes | None,
    watch: Callable[[LogicalGraph, int], CoordinatorWatch] | None = None,
) -> tuple[DetachedJob, Any]:
    """Start ``spec`` under a detached coordinator actor (this process must be connected).

    Args:
        spec: the job; ``spec.job`` relative to the job's ``working_dir``.
        run: as :class:`DetachedCoordinator`.
        load_graph: as :class:`DetachedCoordinator`.
        checkpoint_key: as :class:`DetachedCoordinator`.
        watch: as :class:`DetachedCoordinator`.

    Returns:
        The submitted job and the actor's handle.

    Raises:
        ConfigError: a coordinator of a job of that name is alive already, or
            the actor did not start (its constructor's error, in one line).
    """
    name = actor_name(spec.graph.name)
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass  # no live actor of that name: the job is not running
    else:
        raise ConfigError(
            f"job {spec.graph.name} runs already under detached Ray actor {name} "
            f"(namespace {NAMESPACE}): stop it, or wait for it to end, before submitting again"
        )
    spec_fields = {f.name: getattr(spec, f.name) for f in fields(spec)}
    del spec_fields["job"], spec_fields["graph"]
    actor = (
        ray.remote(DetachedCoordinator)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=0,
            num_cpus=0,
            # result() waits for the job's end; where() and stop() must still answer
            max_concurrency=4,
        )
        .remote(spec.job, spec_fields, run, load_graph, checkpoint_key, watch)
    )
    try:
        pid, node = ray.get(actor.where.remote())
    except ray.exceptions.RayActorError as e:
        raise ConfigError(
            f"the detached coordinator of job {spec.graph.name} did not start: "
            f"{str(e).splitlines()[0]}"
        ) from e
    return DetachedJob(name, pid, node), actor


def wait(job: DetachedJob, actor: Any) -> JobResult:
    """Wait for the detached job of ``actor`` to end; return its result and end the actor.

    Raises:
        JobFailedError: as :func:`run_on_ray`, or the actor died before the
            job ended (the message says to submit again with ``--restore latest``).
        ConfigError: as :func:`run_on_ray`.
    """
    try:
        return ray.get(actor.result.remote())
    except ray.exceptions.RayActorError as e:
        raise JobFailedError(
            f"the detached coordinator {job.name} died before its job ended; submit the job "
            'again with --restore latest (restore="latest") to continue from its latest '
            "checkpoint"
        ) from e
    finally:
        ray.kill(actor, no_restart=True)


def find(job: str, address: str | None) -> Any:
    """The detached coordinator actor of job ``job`` (this process must be connected).

    Args:
        job: the job's name.
        address: the cluster's address, for the message.

    Raises:
        ConfigError: no such actor is alive.
    """
    try:
        return ray.get_actor(actor_name(job), namespace=NAMESPACE)
    except ValueError:
        raise ConfigError(
            f"no job {job!r} runs under a detached coordinator on the Ray cluster at {address} "
            f"(no actor {actor_name(job)} in namespace {NAMESPACE})"
        ) from None


def ask_status(job: str, actor: Any) -> Status:
    """The status of the coordinator in ``actor``.

    Raises:
        ConfigError: the actor ended, or its job has no coordinator yet.
    """
    try:
        status = ray.get(actor.status.remote())
    except ray.exceptions.RayActorError as e:
        raise ConfigError(f"the detached coordinator of job {job!r} ended") from e
    if status is None:
        raise ConfigError(f"job {job!r} is starting: its coordinator is not up yet")
    return status


def ask_savepoint(job: str, actor: Any, target: str | None, stop: bool) -> str:
    """Ask the detached job of ``actor`` for a savepoint; with ``stop`` wait for the job's end
    (every sink committed the savepoint) and end the actor.

    Returns:
        The savepoint folder's URL.

    Raises:
        CheckpointError: no savepoint was written (the reason).
        ConfigError: the actor ended before answering.
        JobFailedError: the job failed after its stop savepoint.
    """
    if target is not None and "://" not in target:
        target = str(Path(target).absolute())
    try:
        url = ray.get(actor.savepoint.remote(target, stop))
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, WeirflowError) else e
        raise CheckpointError(f"job {job!r} wrote no savepoint: {cause}") from e
    except ray.exceptions.RayActorError as e:
        raise ConfigError(f"the detached coordinator of job {job!r} ended before answering") from e
    if stop:
        wait(DetachedJob(actor_name(job), 0, ""), actor)
    return url
