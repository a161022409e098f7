"""Prometheus metrics of a job coordinator and its workers.

Workers send their operators' counts with every heartbeat (never per
record); the coordinator keeps the latest sample per worker, and this
collector turns them, with the coordinator's own view (workers and their
slots and subtasks, checkpoints, restarts, recovery time), into metrics at
scrape time. Per-subtask records carry a ``worker`` label, so a scrape shows
which worker runs which subtask. :class:`ClusterSampler` gives the same view
as :class:`~weirflow.metrics.JobStatus` samples, for the dashboard, the
alerts and rescaling.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from weirflow.metrics import BREAKER_STATES, JobStatus, names
from weirflow.runtime.control import ConnectorReport
from weirflow.runtime.membership import WorkerStatus

if TYPE_CHECKING:
    from weirflow.runtime.coordinator import JobCoordinator

# where records in and dead letters sit in a heartbeat's per-subtask counts
# (see control.Heartbeat)
_RECORDS_IN = 0
_DEAD_LETTERED = 4

_RECORD_COUNTERS = (
    (names.RECORDS_IN, "Records received."),
    (names.RECORDS_OUT, "Records emitted."),
    (names.RECORDS_FILTERED, "Records filtered out."),
    (names.RECORDS_LATE, "Records too late for their window."),
    (names.RECORDS_DEAD_LETTERED, "Records sent to dead letters."),
)


class ClusterCollector:
    """A prometheus_client collector over a running :class:`JobCoordinator`.

    Args:
        coordinator: the coordinator to read (read-only).
    """

    def __init__(self, coordinator: JobCoordinator) -> None:
        self.coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of one scrape."""
        c = self.coordinator
        job = c.spec.graph.name if c.spec is not None else ""
        up = GaugeMetricFamily(
            names.WORKER_UP, "1 for a registered worker.", labels=names.WORKER_LABELS
        )
        slots = GaugeMetricFamily(
            names.WORKER_SLOTS, "Slots a worker offers.", labels=names.WORKER_LABELS
        )
        subtasks = GaugeMetricFamily(
            names.WORKER_SUBTASKS, "Subtask indices a worker runs.", labels=names.WORKER_LABELS
        )
        records = [
            CounterMetricFamily(name, text, labels=names.CLUSTER_OPERATOR_LABELS)
            for name, text in _RECORD_COUNTERS
        ]
        connectors = _ConnectorFamilies()
        for w in list(c.workers.values()):
            if w.status is WorkerStatus.LOST:
                continue
            labels = [job, w.id, w.host]
            up.add_metric(labels, 1)
            slots.add_metric(labels, w.slots)
            subtasks.add_metric(labels, len(w.subtasks))
            for operator, per_subtask in list(w.sample.items()):
                for subtask, values in per_subtask.items():
                    for family, value in zip(records, values, strict=False):
                        family.add_metric([job, operator, str(subtask), w.id], value)
            for operator, reports in list(w.connectors.items()):
                for subtask, report in reports.items():
                    connectors.add([job, operator, str(subtask), w.id], report)
        yield from (up, slots, subtasks, *records, *connectors.families())
        restarts = CounterMetricFamily(
            names.RESTARTS, "Restarts of the job.", labels=names.JOB_LABELS
        )
        restarts.add_metric([job], c.restarts)
        yield restarts
        completed = CounterMetricFamily(
            names.CHECKPOINTS_COMPLETED, "Checkpoints completed.", labels=names.JOB_LABELS
        )
        completed.add_metric([job], c.checkpoints_completed)
        yield completed
        recovery = GaugeMetricFamily(
            names.RECOVERY_TIME,
            "Last recovery: failure detected to every subtask running again (s).",
            labels=names.JOB_LABELS,
        )
        recovery.add_metric([job], c.recovery_ms[-1] / 1000 if c.recovery_ms else 0.0)
        yield recovery
        rescales = CounterMetricFamily(
            names.AUTOSCALE_DECISIONS,
            "Lag-driven rescales decided (direction: up or down).",
            labels=names.AUTOSCALE_LABELS,
        )
        for direction, n in list(c.rescales.items()):
            rescales.add_metric([job, direction], n)
        yield rescales


class _ConnectorFamilies:
    """The connector metrics of one scrape (see ``metrics.names``), labelled by worker."""

    def __init__(self) -> None:
        op = names.CLUSTER_OPERATOR_LABELS
        self.breaker = GaugeMetricFamily(
            names.CONNECTOR_BREAKER_STATE,
            "Circuit breaker of the connector: 0 closed, 1 half-open, 2 open.",
            labels=op,
        )
        self.retries = CounterMetricFamily(
            names.CONNECTOR_RETRIES, "Calls retried, by error class.", labels=(*op, "error_class")
        )
        self.written = CounterMetricFamily(names.SINK_ROWS_WRITTEN, "Rows committed.", labels=op)
        self.rejected = CounterMetricFamily(
            names.SINK_ROWS_REJECTED,
            "Rows refused for their content, by code.",
            labels=(*op, "code"),
        )
        self.transactions = CounterMetricFamily(
            names.SINK_TRANSACTIONS, "Transactions ended.", labels=op
        )
        self.transaction_time = CounterMetricFamily(
            names.SINK_TRANSACTION_TIME, "Time spent ending transactions.", labels=op
        )

    def add(self, labels: list[str], report: ConnectorReport) -> None:
        """Add one connector subtask's report."""
        self.breaker.add_metric(labels, BREAKER_STATES.index(report.breaker))
        for error_class, n in report.retries.items():
            self.retries.add_metric([*labels, error_class], n)
        for code, n in report.rejected.items():
            self.rejected.add_metric([*labels, code], n)
        self.written.add_metric(labels, report.rows_written)
        self.transactions.add_metric(labels, report.transactions)
        self.transaction_time.add_metric(labels, report.transaction_s)

    def families(self) -> tuple[Metric, ...]:
        """Every family, for ``collect``."""
        return (
            self.breaker,
            self.retries,
            self.written,
            self.rejected,
            self.transactions,
            self.transaction_time,
        )


class ClusterSampler:
    """The coordinator's view of its job, one :class:`~weirflow.metrics.JobStatus` per call.

    Read-only on the coordinator; keeps the source counts of recent calls to turn
    them into a read rate, so one sampler serves one caller (one thread).

    Args:
        coordinator: the coordinator to read.
        job: the job's name (the coordinator has none before its run starts).
        clock: processing time in ms since the epoch.
        rate_window: how far back the read rate looks (ms); the workers' counts
            arrive once per heartbeat, so it should span a few of them.
    """

    def __init__(
        self,
        coordinator: JobCoordinator,
        job: str,
        clock: Callable[[], int],
        rate_window_ms: int = 3000,
    ) -> None:
        self.coordinator = coordinator
        self.job = job
        self.clock = clock
        self.rate_window_ms = rate_window_ms
        self._read: deque[tuple[int, int]] = deque()

    def status(self) -> JobStatus:
        """A sample: restarts, the newest completed checkpoint and when it completed, and
        over the workers' latest heartbeats of the current attempt the dead letters, the
        sources' split lag and read rate (records/s). What stays in the workers (tasks,
        watermarks, latency) is left empty."""
        c = self.coordinator
        now = self.clock()
        spec = c.spec
        sources = (
            {o.name for o in spec.graph.operators if o.kind == "source"} if spec else set()
        )
        dead = read = 0
        split_lag: dict[str, int] = {}
        for w in list(c.workers.values()):
            if w.status is WorkerStatus.LOST:
                continue
            split_lag.update(w.split_lag)
            for operator, per_subtask in list(w.sample.items()):
                for values in per_subtask.values():
                    dead += values[_DEAD_LETTERED]
                    if operator in sources:
                        read += values[_RECORDS_IN]
        return JobStatus(
            job=self.job,
            sampled_ms=now,
            split_lag=split_lag,
            restarts=c.restarts,
            records_in_rate=self._rate(now, read),
            dead_letters=dead,
            last_checkpoint_id=c.last_completed,
            last_checkpoint_ms=c.last_completed_ms,
        )

    def _rate(self, now_ms: int, read: int) -> float:
        if self._read and read < self._read[-1][1]:
            self._read.clear()  # a new attempt's counts start again at 0
        self._read.append((now_ms, read))
        while len(self._read) > 1 and self._read[1][0] <= now_ms - self.rate_window_ms:
            self._read.popleft()
        since_ms, before = self._read[0]
        return (read - before) * 1000 / (now_ms - since_ms) if now_ms > since_ms else 0.0


def cluster_registry(coordinator: JobCoordinator) -> CollectorRegistry:
    """A registry holding only the coordinator's :class:`ClusterCollector`."""
    registry = CollectorRegistry()
    registry.register(ClusterCollector(coordinator))  # type: ignore[arg-type]
    return registry
