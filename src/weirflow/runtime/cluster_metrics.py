"""Prometheus metrics and status samples of a job coordinator and its workers.

Workers send their operators' counts and connector reports with every
heartbeat (never per record); the coordinator keeps the latest heartbeat per
worker. :func:`latest_counts` and :func:`latest_reports` are the one reading
of them: :class:`ClusterCollector` turns them, with the coordinator's own view
(workers and their slots and subtasks, checkpoints, restarts, recovery time),
into metrics at scrape time, each per-subtask record with a ``worker`` label,
so a scrape shows which worker runs which subtask; :class:`ClusterSampler`
turns them into :class:`~weirflow.metrics.JobStatus` samples (per-subtask
:class:`~weirflow.metrics.OperatorSample` and
:class:`~weirflow.metrics.ConnectorSample` rows, as a job in one process
has), for the dashboard, ``weirflow status``, the alerts and rescaling.

Heartbeats carry counts, connector reports and split lag only: task figures
(backpressure, buffer usage, watermarks), dead letters by error class and
latency stay in the workers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from weirflow.graph import LogicalGraph, compile_plan
from weirflow.metrics import (
    BREAKER_STATES,
    ConnectorSample,
    ConnectorStats,
    JobStatus,
    OperatorSample,
    names,
)
from weirflow.records import OperatorCounts
from weirflow.runtime.control import ConnectorReport
from weirflow.runtime.membership import WorkerEntry, WorkerStatus

if TYPE_CHECKING:
    from weirflow.runtime.coordinator import JobCoordinator

_RECORD_COUNTERS = (
    (names.RECORDS_IN, "Records received."),
    (names.RECORDS_OUT, "Records emitted."),
    (names.RECORDS_FILTERED, "Records filtered out."),
    (names.RECORDS_LATE, "Records too late for their window."),
    (names.RECORDS_DEAD_LETTERED, "Records sent to dead letters."),
)


class SubtaskCounts(NamedTuple):
    """One operator subtask's counts, from the latest heartbeat of the worker running it.

    Attributes:
        worker: the worker's id.
        operator: the operator's name.
        subtask: the subtask index.
        counts: records in, out, filtered, late and dead-lettered since the attempt started.
    """

    worker: str
    operator: str
    subtask: int
    counts: OperatorCounts


class SubtaskReport(NamedTuple):
    """One connector subtask's report, from the latest heartbeat of the worker running it.

    Attributes:
        worker: the worker's id.
        operator: the operator's name.
        subtask: the subtask index.
        report: what the connector reported on its external system.
    """

    worker: str
    operator: str
    subtask: int
    report: ConnectorReport


def _live(workers: Iterable[WorkerEntry]) -> Iterator[WorkerEntry]:
    # a lost worker's last heartbeat describes tasks that no longer run
    return (w for w in list(workers) if w.status is not WorkerStatus.LOST)


def latest_counts(workers: Iterable[WorkerEntry]) -> list[SubtaskCounts]:
    """Every operator subtask's counts in the latest heartbeats of ``workers`` (lost ones
    left out). Read from any thread: a heartbeat replaces a worker's sample whole."""
    return [
        SubtaskCounts(w.id, operator, subtask, OperatorCounts(*values))
        for w in _live(workers)
        for operator, per_subtask in list(w.sample.items())
        for subtask, values in per_subtask.items()
    ]


def latest_reports(workers: Iterable[WorkerEntry]) -> list[SubtaskReport]:
    """Every connector subtask's report in the latest heartbeats of ``workers`` (lost ones
    left out). Read from any thread, like :func:`latest_counts`."""
    return [
        SubtaskReport(w.id, operator, subtask, report)
        for w in _live(workers)
        for operator, reports in list(w.connectors.items())
        for subtask, report in reports.items()
    ]


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
        workers = list(_live(c.workers.values()))
        for w in workers:
            labels = [job, w.id, w.host]
            up.add_metric(labels, 1)
            slots.add_metric(labels, w.slots)
            subtasks.add_metric(labels, len(w.subtasks))
        for s in latest_counts(workers):
            for family, value in zip(records, s.counts, strict=True):
                family.add_metric([job, s.operator, str(s.subtask), s.worker], value)
        for r in latest_reports(workers):
            connectors.add([job, r.operator, str(r.subtask), r.worker], r.report)
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


class OperatorPlaces:
    """Where each operator of a job sits: its kind, the task it runs in, its place in the job.

    Turns heartbeat counts into the :class:`~weirflow.metrics.OperatorSample` rows a job in
    one process samples, in job order (operators as declared, then subtask).

    Args:
        graph: the job's logical graph.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
    """

    def __init__(self, graph: LogicalGraph, parallelism: int, max_parallelism: int) -> None:
        plan = compile_plan(graph, parallelism, max_parallelism)
        head = {op: graph.get(c.head).name for c in plan.chains for op in c.operators}
        self.parallelism = parallelism
        self._places = {
            op.name: (position, op.kind, head[op.id]) for position, op in enumerate(graph.operators)
        }

    def order(self, operator: str, subtask: int) -> tuple[int, str, int]:
        """Sort key of an operator subtask: job order, then subtask (unknown names last)."""
        place = self._places.get(operator)
        return (place[0] if place else len(self._places), operator, subtask)

    def samples(
        self,
        counts: Iterable[SubtaskCounts],
        rates: dict[tuple[str, int], tuple[float, float]] | None = None,
    ) -> tuple[OperatorSample, ...]:
        """One sample per operator subtask, in job order.

        Args:
            counts: the subtasks' counts (see :func:`latest_counts`).
            rates: ``(operator, subtask)`` → records/s in and out; a subtask left out
                has rates 0.

        Returns:
            The samples; ``task`` names the chain's task as a worker does,
            ``"<head>[<i>/<p>]"``.
        """
        rates = rates or {}
        out = []
        for s in sorted(counts, key=lambda s: self.order(s.operator, s.subtask)):
            _, kind, head = self._places.get(s.operator, (0, "operator", s.operator))
            in_rate, out_rate = rates.get((s.operator, s.subtask), (0.0, 0.0))
            out.append(
                OperatorSample(
                    operator=s.operator,
                    subtask=s.subtask,
                    task=f"{head}[{s.subtask}/{self.parallelism}]",
                    kind=kind,
                    records_in=s.counts.records_in,
                    records_out=s.counts.records_out,
                    filtered=s.counts.filtered,
                    late=s.counts.late,
                    dead_lettered=s.counts.dead_lettered,
                    in_rate=in_rate,
                    out_rate=out_rate,
                )
            )
        return tuple(out)


class _Rates:
    """Per-subtask records/s in and out, over the counts of recent samples of one attempt.

    Args:
        window_ms: how far back a rate looks (ms).
    """

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._attempt: int | None = None
        self._history: deque[tuple[int, dict[tuple[str, int], tuple[int, int]]]] = deque()

    def observe(
        self, now_ms: int, attempt: int, counts: Iterable[SubtaskCounts]
    ) -> dict[tuple[str, int], tuple[float, float]]:
        """Add the counts sampled at ``now_ms`` and return the rates by ``(operator, subtask)``
        (a subtask absent from the oldest sample of the window is left out)."""
        if attempt != self._attempt:
            self._history.clear()  # a new attempt's counts start again at 0
            self._attempt = attempt
        current = {
            (s.operator, s.subtask): (s.counts.records_in, s.counts.records_out) for s in counts
        }
        history = self._history
        history.append((now_ms, current))
        while len(history) > 1 and history[1][0] <= now_ms - self.window_ms:
            history.popleft()
        since_ms, before = history[0]
        if now_ms <= since_ms:
            return {}
        per_ms = 1000 / (now_ms - since_ms)
        return {
            key: (max(0, now_in - old[0]) * per_ms, max(0, now_out - old[1]) * per_ms)
            for key, (now_in, now_out) in current.items()
            if (old := before.get(key)) is not None
        }


def _stats(report: ConnectorReport) -> ConnectorStats:
    return ConnectorStats(
        breaker=report.breaker,
        retries=dict(report.retries),
        rows_written=report.rows_written,
        rejected=dict(report.rejected),
        transactions=report.transactions,
        transaction_s=report.transaction_s,
    )


class ClusterSampler:
    """The coordinator's view of its job, one :class:`~weirflow.metrics.JobStatus` per call.

    Read-only on the coordinator; keeps the counts of recent calls to turn them into
    rates, so one sampler serves one caller (one thread).

    Args:
        coordinator: the coordinator to read.
        job: the job's name (the coordinator has none before its run starts).
        clock: processing time in ms since the epoch.
        rate_window_ms: how far back the rates look (ms); the workers' counts
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
        self._rates = _Rates(rate_window_ms)
        self._places: tuple[object, OperatorPlaces] | None = None

    def places(self) -> OperatorPlaces | None:
        """The places of the operators of the coordinator's current job, or ``None`` before
        its run starts (compiled once per run)."""
        spec = self.coordinator.spec
        if spec is None:
            return None
        if self._places is None or self._places[0] is not spec:
            self._places = (
                spec,
                OperatorPlaces(spec.graph, spec.parallelism, spec.max_parallelism),
            )
        return self._places[1]

    def status(self) -> JobStatus:
        """A sample from the workers' latest heartbeats of the current attempt: per
        operator subtask its counts and rates (records/s), per connector subtask its
        report, the sources' split lag and read rate, the sinks' receive rate, the dead
        letters; and from the coordinator the restarts and the newest completed checkpoint
        and when it completed. What stays in the workers (task figures, watermarks,
        latency) is left empty."""
        c = self.coordinator
        now = self.clock()
        counts = latest_counts(c.workers.values())
        rates = self._rates.observe(now, c.attempt, counts)
        places = self.places()
        operators = places.samples(counts, rates) if places is not None else ()
        split_lag: dict[str, int] = {}
        for w in _live(c.workers.values()):
            split_lag.update(w.split_lag)
        return JobStatus(
            job=self.job,
            sampled_ms=now,
            operators=operators,
            split_lag=split_lag,
            restarts=c.restarts,
            records_in_rate=sum(o.in_rate for o in operators if o.kind == "source"),
            records_out_rate=sum(o.in_rate for o in operators if o.kind == "sink"),
            dead_letters=sum(o.dead_lettered for o in operators),
            last_checkpoint_id=c.last_completed,
            last_checkpoint_ms=c.last_completed_ms,
            connectors=self.connectors(),
        )

    def connectors(self) -> tuple[ConnectorSample, ...]:
        """Every connector subtask's report in the workers' latest heartbeats, in job order
        (no rate state: any thread)."""
        reports = latest_reports(self.coordinator.workers.values())
        places = self.places()
        if places is not None:
            reports.sort(key=lambda r: places.order(r.operator, r.subtask))
        return tuple(ConnectorSample(r.operator, r.subtask, _stats(r.report)) for r in reports)


def cluster_registry(coordinator: JobCoordinator) -> CollectorRegistry:
    """A registry holding only the coordinator's :class:`ClusterCollector`."""
    registry = CollectorRegistry()
    registry.register(ClusterCollector(coordinator))  # type: ignore[arg-type]
    return registry
