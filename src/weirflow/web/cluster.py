"""The dashboard of a job whose coordinator runs in this process and whose workers run elsewhere.

For ``weirflow run --workers N`` and ``--ray``: the job's tasks run in
worker processes (or Ray actors), so there is no task to sample here. The
view has the job graph, the coordinator's progress (restarts, last
completed checkpoint), the operator subtasks' counts and the connectors'
reports that the workers send with every heartbeat (see
:class:`~weirflow.runtime.cluster_metrics.ClusterSampler`; task figures such
as backpressure and watermarks stay in the workers), and the workers with
where each is placed: the coordinator tells :class:`ClusterObserver` of every
change of its workers through its workers listener, so the dashboard never
polls the coordinator for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from weirflow.graph import LogicalGraph
from weirflow.metrics import ConnectorSample, JobStatus
from weirflow.runtime.cluster_metrics import ClusterSampler
from weirflow.runtime.control import WorkerInfo
from weirflow.runtime.coordinator import JobCoordinator
from weirflow.web.observe import job_graph


def worker_row(info: WorkerInfo) -> dict[str, Any]:
    """One worker as the dashboard shows it.

    Returns:
        ``worker``, ``host``, ``placed_on`` (where its launcher placed it, e.g.
        ``ray node <id> at <ip>``; the host for a worker on a plain machine),
        ``slots``, ``state`` (``idle``, ``deployed``), ``subtasks``.
    """
    return {
        "worker": info.worker_id,
        "host": info.host,
        "placed_on": info.location or info.host,
        "slots": info.slots,
        "state": info.status,
        "subtasks": list(info.subtasks),
    }


class ClusterObserver:
    """What the dashboard shows of a job run by a coordinator in this process.

    Args:
        graph: the job's logical graph.
        parallelism: subtasks per operator.
        clock: processing time in ms since the epoch (injected).
    """

    def __init__(self, graph: LogicalGraph, parallelism: int, clock: Callable[[], int]) -> None:
        self.graph = graph
        self.parallelism = parallelism
        self.clock = clock
        self._workers: list[dict[str, Any]] = []
        self._sampler: ClusterSampler | None = None

    def watch(self, coordinator: JobCoordinator) -> None:
        """Follow ``coordinator``'s workers (call before it starts)."""
        self._sampler = ClusterSampler(coordinator, self.graph.name, self.clock)
        coordinator.add_workers_listener(self._workers_changed)

    def _workers_changed(self, infos: list[WorkerInfo]) -> None:
        # one assignment: readers on the server's thread see the old list or the new one
        self._workers = [worker_row(i) for i in infos]

    def workers(self) -> list[dict[str, Any]]:
        """The registered workers, as of the coordinator's latest change (any thread)."""
        return self._workers

    def status(self) -> JobStatus:
        """The coordinator's view of the job (see
        :class:`~weirflow.runtime.cluster_metrics.ClusterSampler`)."""
        if self._sampler is None:
            return JobStatus(job=self.graph.name, sampled_ms=self.clock())
        return self._sampler.status()

    def connectors(self) -> tuple[ConnectorSample, ...]:
        """The connector reports of the workers' latest heartbeats (any thread)."""
        if self._sampler is None:
            return ()
        return self._sampler.connectors()

    def job_graph(self) -> dict[str, Any]:
        """The job graph (see :func:`weirflow.web.observe.job_graph`)."""
        return job_graph(self.graph, self.parallelism)


def dashboard_watch(
    graph: LogicalGraph,
    parallelism: int,
    clock: Callable[[], int],
    port: int,
    host: str,
    token: str | None,
) -> Callable[[JobCoordinator], Callable[[], None]]:
    """What serves the dashboard of a coordinator's job while it runs.

    Args:
        graph: the job's logical graph.
        parallelism: subtasks per operator.
        clock: processing time in ms since the epoch.
        port: the dashboard's TCP port.
        host: the address it binds.
        token: its access token (required beyond loopback).

    Returns:
        A watch for :func:`weirflow.runtime.launched.run_with_launcher`: given
        the coordinator, it serves the dashboard and returns what closes it.
        It raises :class:`~weirflow.errors.ConfigError` when the port is taken.
    """

    def watch(coordinator: JobCoordinator) -> Callable[[], None]:
        from weirflow.web.app import serve_dashboard

        observer = ClusterObserver(graph, parallelism, clock)
        observer.watch(coordinator)
        return serve_dashboard(observer, port, host, token).close

    return watch
