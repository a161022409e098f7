"""The runtime's one entry for running a job, which ``Dataflow.run`` calls.

It picks where the job runs: in this process on the local scheduler (one
worker, the default), on several local worker processes under a job
coordinator in this process (``workers > 1``), or on worker actors of a Ray
cluster under a coordinator in this process (``cluster=RayCluster(...)``).
All keep the same guarantees; ``weirflow run`` uses the same pieces.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from weirflow.checkpoint import CheckpointConfig
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.metrics import configure_from_env
from weirflow.records import JobResult
from weirflow.runtime.build import RuntimeOptions
from weirflow.runtime.checkpointed import CheckpointedRun, RunListener
from weirflow.runtime.job import run_unchecked, wall_clock_ms
from weirflow.runtime.jobspec import JobSpec
from weirflow.runtime.local import LocalScheduler
from weirflow.runtime.local_cluster import run_on_local_workers
from weirflow.runtime.ray_cluster import RayCluster, run_on_ray
from weirflow.runtime.restart import RestartStrategy
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.state import StateBackend


def run_job(
    graph: LogicalGraph,
    parallelism: int,
    max_parallelism: int,
    *,
    checkpoint: CheckpointConfig | None = None,
    restore: str | None = None,
    restart: RestartStrategy | None = None,
    runtime: RuntimeOptions | None = None,
    stop: threading.Event | None = None,
    listener: RunListener | None = None,
    storage_options: dict[str, Any] | None = None,
    guarantee: str = "exactly_once",
    workers: int = 1,
    job: str | None = None,
    cluster: RayCluster | None = None,
    load_graph: Callable[[str], LogicalGraph] | None = None,
    savepoints: SavepointRequests | None = None,
    state_backend: StateBackend | None = None,
    tracing: bool = False,
    **unknown: Any,
) -> JobResult:
    """Run ``graph`` in this process, or on ``workers`` local worker processes.

    Args:
        graph: the logical graph.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        checkpoint: checkpoint configuration; ``None`` runs without checkpoints.
        restore: ``None`` (fresh; refused when the job already has completed
            checkpoints in the storage), ``"none"`` (fresh on purpose),
            ``"latest"``, ``"latest-or-fresh"`` or the path of a checkpoint or
            savepoint; needs ``checkpoint``.
        restart: restart strategy for failed attempts; needs ``checkpoint``.
        runtime: buffer and batch sizes.
        stop: an event that, when set, ends the run: with checkpoints after a final
            checkpoint (sinks commit); without, at once (sinks do not commit).
        listener: progress callbacks (checkpoints, failures); without
            checkpoints only ``attempt_running`` is called (metrics).
        storage_options: fsspec options of the checkpoint storage.
        guarantee: without checkpoints, ``at_most_once`` makes sources commit
            positions as they read (with checkpoints the mode comes from ``checkpoint``).
        workers: worker processes; above 1 the job runs under a coordinator in
            this process, and ``listener`` sees attempts and checkpoints only.
        job: with ``workers > 1`` or ``cluster``, ``FILE.py:NAME`` where the
            worker processes import the dataflow from.
        cluster: run on worker actors of this Ray cluster (needs ``weirflow[ray]``).
        load_graph: with ``cluster``, ``FILE.py:NAME`` → logical graph, run in
            the actors (importable there by reference).
        savepoints: where other threads ask the running job for savepoints
            (:class:`~weirflow.runtime.savepoint_requests.SavepointRequests`);
            needs ``checkpoint``.
        state_backend: where keyed state and timers live
            (``MemoryStateBackend()``, the default, or ``RocksDBStateBackend(...)``);
            overrides ``runtime.state_backend``.
        tracing: continue W3C trace contexts found in record headers through
            the job, one span per buffer of records and operator, and write
            them into the headers of what event-log and Kafka sinks write
            (needs ``weirflow[otel]``; sampling and export follow the
            ``OTEL_*`` environment; a tracer provider this process already
            installed is used as it is). Overrides ``runtime.tracing``.

    Returns:
        The job's :class:`~weirflow.records.JobResult`.

    Raises:
        ConfigError: an unknown or inconsistent option; ``restore=None`` over
            completed checkpoints of the job; a restore that would commit sink
            output again (``DuplicateOutputError``).
        JobFailedError: a task failed and no restart followed.
    """
    if unknown:
        raise ConfigError(f"unknown run() option(s): {', '.join(sorted(unknown))}")
    if state_backend is not None:
        if not isinstance(state_backend, StateBackend):
            raise ConfigError(
                f"state_backend= takes MemoryStateBackend() or RocksDBStateBackend(...), got "
                f"{state_backend!r}"
            )
        runtime = dataclasses.replace(runtime or RuntimeOptions(), state_backend=state_backend)
    if tracing:
        configure_from_env()
        runtime = dataclasses.replace(runtime or RuntimeOptions(), tracing=True)
    if type(workers) is not int or workers < 1:
        raise ConfigError(f"workers= takes a count >= 1, got {workers!r}")
    if cluster is not None and not isinstance(cluster, RayCluster):
        raise ConfigError("cluster= takes a RayCluster")
    if cluster is not None and workers != 1:
        raise ConfigError("with cluster= give the worker count as RayCluster(workers=N)")
    if workers > 1 or cluster is not None:
        if job is None:
            raise ConfigError("workers > 1 needs job='FILE.py:NAME' for the worker processes")
        if checkpoint is not None and not isinstance(checkpoint, CheckpointConfig):
            raise ConfigError("checkpoint= takes a CheckpointConfig")
        spec = JobSpec(
            job=job,
            graph=graph,
            parallelism=parallelism,
            max_parallelism=max_parallelism,
            checkpoint=checkpoint,
            guarantee=guarantee if checkpoint is None else checkpoint.mode,
            restore=restore,
            restart=restart or RestartStrategy.none(),
            options=runtime or RuntimeOptions(),
        )
        if cluster is None:
            return run_on_local_workers(
                spec, workers, stop=stop, listener=listener, savepoints=savepoints
            )
        if load_graph is None:
            raise ConfigError("cluster= needs load_graph= for the worker actors")
        return run_on_ray(
            spec, cluster, load_graph, stop=stop, listener=listener, savepoints=savepoints
        )
    if checkpoint is None:
        if restore is not None or restart is not None or savepoints is not None:
            raise ConfigError(
                "restore=, restart= and savepoints= need checkpoints: pass "
                "checkpoint=CheckpointConfig(...)"
            )

        def hooks(scheduler: LocalScheduler) -> None:
            if stop is not None:
                scheduler.hooks.before_round.append(lambda now: stop.is_set())
            if listener is not None:
                listener.attempt_running(scheduler, None)

        return run_unchecked(
            graph, parallelism, max_parallelism, runtime, guarantee=guarantee, scheduler_hook=hooks
        )
    if not isinstance(checkpoint, CheckpointConfig):
        raise ConfigError("checkpoint= takes a CheckpointConfig")
    return CheckpointedRun(
        graph,
        parallelism,
        max_parallelism,
        checkpoint,
        restore=restore,
        restart=restart,
        options=runtime,
        clock=wall_clock_ms,
        sleep=time.sleep,
        stop=stop,
        listener=listener,
        storage_options=storage_options,
        savepoints=savepoints,
    ).run()
