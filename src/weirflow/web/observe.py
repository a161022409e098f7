"""Observing a run: the listener that feeds the metrics registry and the dashboard.

:class:`JobObserver` is a :class:`~weirflow.runtime.RunListener`. On every
attempt it attaches a :class:`~weirflow.metrics.RuntimeCollector` to the
attempt's tasks and coordinator (a ``before_round`` hook, sampling at most
every ``interval_ms``), records each task's synchronous snapshot for the
checkpoint alignment time and the latency markers, and turns completed
checkpoints into checkpoint metrics. It never stops a run and never changes
what the tasks compute.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from weirflow.checkpoint import CheckpointCoordinator, CompletedCheckpoint
from weirflow.graph import LogicalGraph, compile_plan
from weirflow.metrics import (
    CheckpointTracker,
    ConnectorSample,
    JobRegistry,
    JobStatus,
    LagProbe,
    RuntimeCollector,
)
from weirflow.runtime import LocalScheduler, RunListener, Task, TaskState


class JobObserver(RunListener):
    """Metrics and status of one job run in this process.

    Args:
        graph: the job's logical graph (for the job graph view).
        parallelism: subtasks per operator.
        clock: processing time in ms since the epoch (injected).
        interval_ms: minimum processing time between samples (ms).
        lag_probe: reads per-split lag from a source operator, or ``None``.
        restarts: restarts before this process started (from the supervisor).
        recovery_ms: recovery time before this process started (ms, from the supervisor).
        started_ms: when this process started (ms since the epoch); with
            ``restarts`` > 0, the time until the first round counts as recovery.
        inner: another listener to forward every callback to (log lines).
    """

    def __init__(
        self,
        graph: LogicalGraph,
        parallelism: int,
        clock: Callable[[], int],
        *,
        interval_ms: int = 500,
        lag_probe: LagProbe | None = None,
        restarts: int = 0,
        recovery_ms: int = 0,
        started_ms: int | None = None,
        inner: RunListener | None = None,
    ) -> None:
        self.graph = graph
        self.parallelism = parallelism
        self.clock = clock
        self.lag_probe = lag_probe
        self.inner = inner or RunListener()
        self.metrics = JobRegistry(graph.name)
        self.checkpoints = CheckpointTracker(self.metrics, clock)
        self.collector = RuntimeCollector(self.metrics, self.checkpoints, interval_ms)
        self.collector.restarts = restarts
        self.collector.recovery_ms = recovery_ms
        if restarts:
            self.metrics.restarts.inc(restarts)
            self.metrics.recovery.inc(recovery_ms / 1000)
        self._recovering_since = started_ms if restarts else None

    # -- RunListener -----------------------------------------------------------

    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        """Count an in-process restart (every attempt after the first)."""
        if attempt > 0:
            self.collector.restarts += 1
            self.metrics.restarts.inc()
        self.inner.attempt_started(attempt, restored_from)

    def attempt_failed(self, attempt: int, error: BaseException, wait_ms: int | None) -> None:
        """Start timing the recovery (until the next attempt's first round)."""
        self._recovering_since = self.clock()
        self.inner.attempt_failed(attempt, error, wait_ms)

    def attempt_running(
        self, scheduler: LocalScheduler, coordinator: CheckpointCoordinator | None
    ) -> None:
        """Attach the collector to the attempt's tasks and watch their snapshots."""
        self.attach(scheduler, coordinator)
        for task in scheduler.tasks:
            task.on_snapshot = self._watching(task.on_snapshot)
        self.inner.attempt_running(scheduler, coordinator)

    def checkpoint_completed(self, completed: CompletedCheckpoint) -> None:
        """Publish the checkpoint's duration, sizes and alignment time."""
        m = completed.manifest
        self.checkpoints.completed(
            completed.checkpoint_id,
            m.trigger_timestamp_ms,
            m.completed_timestamp_ms,
            [(h.path, h.size) for t in m.tasks.values() for h in t.handles.values()],
        )
        # A bounded job's last checkpoint comes after its last round: sample once more
        # so the final counts are published.
        self.collector.sample(self.clock())
        self.inner.checkpoint_completed(completed)

    # -- runs without checkpoints ----------------------------------------------

    def attach(self, scheduler: LocalScheduler, coordinator: CheckpointCoordinator | None) -> None:
        """Sample ``scheduler``'s tasks from a ``before_round`` hook (also for unchecked runs).

        Args:
            scheduler: the scheduler about to run the attempt.
            coordinator: the attempt's checkpoint coordinator, ``None`` without checkpoints.
        """
        self.collector.attach(scheduler.tasks, coordinator, self.lag_probe)
        scheduler.hooks.before_round.append(self._on_round)

    # -- views -----------------------------------------------------------------

    def status(self) -> JobStatus:
        """The latest sample (any thread)."""
        return self.collector.status()

    def connectors(self) -> tuple[ConnectorSample, ...]:
        """Every reporting connector read now (any thread; live while a sink is blocked)."""
        return self.collector.connectors_now()

    def job_graph(self) -> dict[str, Any]:
        """The job graph (see :func:`job_graph`)."""
        return job_graph(self.graph, self.parallelism)

    def workers(self) -> list[dict[str, Any]]:
        """The one worker of an in-process run: this process, placed on this host.

        Returns:
            One row: ``worker``, ``host``, ``placed_on``, ``slots``, ``state``, ``subtasks``.
        """
        here = socket.gethostname()
        return [
            {
                "worker": f"{here}:{os.getpid()}",
                "host": here,
                "placed_on": here,
                "slots": self.parallelism,
                "state": "running",
                "subtasks": list(range(self.parallelism)),
            }
        ]

    # -- internals ---------------------------------------------------------------

    def _on_round(self, now_ms: int) -> bool:
        if self._recovering_since is not None:
            elapsed = max(0, now_ms - self._recovering_since)
            self._recovering_since = None
            self.collector.recovery_ms += elapsed
            self.metrics.recovery.inc(elapsed / 1000)
        return self.collector.on_round(now_ms)

    def _watching(
        self, on_snapshot: Callable[[Task, int, dict[str, Any]], None]
    ) -> Callable[[Task, int, dict[str, Any]], None]:
        tracker = self.checkpoints

        def watched(task: Task, checkpoint_id: int, states: dict[str, Any]) -> None:
            tracker.task_snapshot(
                checkpoint_id,
                barrier=task.state is TaskState.RUNNING,
                is_sink=any(op.spec.kind == "sink" for op in task.chain),
            )
            on_snapshot(task, checkpoint_id, states)

        return watched


def job_graph(graph: LogicalGraph, parallelism: int) -> dict[str, Any]:
    """The job graph of ``graph`` at ``parallelism``: operators, edges and chains.

    Returns:
        ``{"job", "parallelism", "operators": [{id, name, kind, chain}],
        "edges": [{from, to, partitioning, output, chained}],
        "chains": [{index, head, operators}]}`` (ids are operator ids).
    """
    plan = compile_plan(graph, parallelism, max(128, parallelism))
    chain_of = {op: c.index for c in plan.chains for op in c.operators}
    chained = {(up, down) for up, down, _ in plan.chained_edges}
    return {
        "job": graph.name,
        "parallelism": parallelism,
        "operators": [
            {"id": op.id, "name": op.name, "kind": op.kind, "chain": chain_of.get(op.id)}
            for op in graph.operators
        ],
        "edges": [
            {
                "from": e.upstream,
                "to": op.id,
                "partitioning": e.partitioning,
                "output": e.output,
                "chained": (e.upstream, op.id) in chained,
            }
            for op in graph.operators
            for e in op.inputs
        ],
        "chains": [
            {"index": c.index, "head": c.head, "operators": list(c.operators)} for c in plan.chains
        ],
    }
