"""Running a logical graph: the bridge from the builder (``api``) to the ``runtime``.

It is a top-level module because the layer table lets ``api`` describe a job
but not import the runtime that executes it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from weirflow.checkpoint import CheckpointConfig
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.records import JobResult
from weirflow.runtime import (
    CheckpointedRun,
    LocalScheduler,
    RestartStrategy,
    RunListener,
    RuntimeOptions,
    run_unchecked,
    wall_clock_ms,
)


def execute(
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
    **unknown: Any,
) -> JobResult:
    """Run ``graph`` in this process on the local scheduler.

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
    if checkpoint is None:
        if restore is not None or restart is not None:
            raise ConfigError(
                "restore= and restart= need checkpoints: pass checkpoint=CheckpointConfig(...)"
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
    ).run()
