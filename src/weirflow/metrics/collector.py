"""Sampling a running job: the per-round hook that reads counters and publishes metrics.

Nothing here runs per record. The runtime already keeps plain int counters
on every operator (``records_in``, ``records_out``, ``filtered``, ``late``,
``dead_lettered``) and on every task (``steps``, ``backpressured_steps``),
and channels know how many buffers they hold. :meth:`RuntimeCollector.on_round`
is a scheduler ``before_round`` hook: it returns at once unless
``interval_ms`` of processing time passed since the last sample, and then
reads those fields, publishes deltas to the Prometheus counters, and builds
a new immutable :class:`~weirflow.metrics.model.JobStatus`.

This layer imports nothing of weirflow; it reads the runtime's objects
through the duck-typed views below (the runtime may import this layer, not
the other way round).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from weirflow.metrics.checkpoints import CheckpointTracker, CoordinatorView
from weirflow.metrics.model import (
    BREAKER_STATES,
    ConnectorSample,
    ConnectorStats,
    JobStatus,
    OperatorSample,
    TaskSample,
)
from weirflow.metrics.registry import JobRegistry

#: ``source operator logic -> {split: records not read yet}``; ``None`` when it cannot tell.
LagProbe = Callable[[Any], dict[str, int] | None]

_NO_WATERMARK = 2**62  # the runtime's MIN/MAX watermarks are ±2**63; real ones are far inside
_DEAD_LETTER_OUTPUT = "dead_letter"


class OperatorView(Protocol):
    """The fields of an operator logic object the collector reads.

    ``output.targets("dead_letter").chained`` is where the dead-letter
    observer is attached; ``spec.kind``, when present, names the operator kind.
    """

    name: str
    records_in: int
    filtered: int
    late: int
    dead_lettered: int
    output: Any

    @property
    def records_out(self) -> int:
        """Records emitted on the main output."""
        ...


@runtime_checkable
class ReportsConnectorStats(Protocol):
    """An operator (a sink) that reports on its external system (optional ability)."""

    def connector_stats(self) -> ConnectorStats | None:
        """Return the current stats, or ``None`` when its connector reports none."""
        ...


class TaskView(Protocol):
    """The fields of a task the collector reads."""

    name: str
    subtask: int
    chain: Sequence[OperatorView]
    inputs: Sequence[Any]
    writers: Sequence[Any]
    steps: int
    backpressured_steps: int
    is_source: bool


class _DeadLetterObserver:
    """Counts dead letters by error type; chained to an operator's dead-letter output.

    It sees only dead letters (rare by nature), never ordinary records.
    """

    def __init__(self) -> None:
        self.by_error: Counter[str] = Counter()

    def process_batch(
        self, values: list[Any], timestamps: Any, keys: Any, headers: Any = None
    ) -> None:
        for v in values:
            self.by_error[getattr(v, "error_type", type(v).__name__)] += 1

    def on_watermark(self, watermark_ms: int) -> None:
        """Watermarks end here (nothing is downstream of the observer)."""
        return None


class RuntimeCollector:
    """Samples an attempt's tasks every ``interval_ms`` of processing time.

    Args:
        metrics: where to publish.
        checkpoints: the checkpoint tracker (polled on every sample).
        interval_ms: minimum processing time between samples (ms).

    Attributes:
        restarts: restarts so far (set by the owner; shown in the status).
        recovery_ms: recovery time so far in ms (set by the owner).
        samples: samples taken so far.
    """

    def __init__(
        self, metrics: JobRegistry, checkpoints: CheckpointTracker, interval_ms: int = 500
    ) -> None:
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.interval_ms = interval_ms
        self.restarts = 0
        self.recovery_ms = 0
        self.samples = 0
        self._tasks: list[TaskView] = []
        self._lag_probe: LagProbe | None = None
        self._last_ms: int | None = None
        self._prev: dict[tuple[str, int], tuple[int, ...]] = {}
        self._prev_steps: dict[str, tuple[int, int]] = {}
        self._observers: dict[tuple[str, int], _DeadLetterObserver] = {}
        self._seen_errors: dict[tuple[str, int, str], int] = {}
        self._seen_connector: dict[tuple[str, int, str, str], int] = {}
        self._lock = threading.Lock()
        self._status = JobStatus(job=metrics.job, sampled_ms=0)

    def attach(
        self,
        tasks: Sequence[TaskView],
        coordinator: CoordinatorView | None = None,
        lag_probe: LagProbe | None = None,
    ) -> None:
        """Follow a new attempt's tasks (their counters start at zero again).

        Args:
            tasks: every task of the attempt.
            coordinator: the attempt's checkpoint coordinator, or ``None``.
            lag_probe: reads per-split lag from a source operator.
        """
        self._tasks = list(tasks)
        self._lag_probe = lag_probe
        self._prev = {}
        self._prev_steps = {}
        self._observers = {}
        self._seen_errors = {}
        self._seen_connector = {}
        self._last_ms = None
        self.checkpoints.attach(coordinator)
        for t in self._tasks:
            for op in t.chain:
                obs = _DeadLetterObserver()
                op.output.targets(_DEAD_LETTER_OUTPUT).chained.append(obs)
                self._observers[(op.name, t.subtask)] = obs

    def on_round(self, now_ms: int) -> bool:
        """Scheduler hook: sample when ``interval_ms`` passed; never stops the run.

        Returns:
            ``False`` always.
        """
        last = self._last_ms
        if last is not None and now_ms - last < self.interval_ms:
            return False
        self.sample(now_ms)
        return False

    def sample(self, now_ms: int) -> JobStatus:
        """Read every task now, publish to the registry, and store a new status.

        Returns:
            The new :class:`~weirflow.metrics.model.JobStatus`.
        """
        elapsed_s = (now_ms - self._last_ms) / 1000 if self._last_ms is not None else 0.0
        self._last_ms = now_ms
        self.samples += 1
        m = self.metrics
        job = m.job
        ops: list[OperatorSample] = []
        tasks: list[TaskSample] = []
        split_lag: dict[str, int] = {}
        in_rate = out_rate = 0.0
        dead = 0
        watermarks: list[int] = []
        connectors: list[ConnectorSample] = []
        for t in self._tasks:
            for op in t.chain:
                if isinstance(op, ReportsConnectorStats):
                    stats = op.connector_stats()
                    if stats is not None:
                        connectors.append(self._publish_connector(job, op.name, t.subtask, stats))
                sample = self._sample_operator(job, t, op, elapsed_s)
                ops.append(sample)
                dead += sample.dead_lettered
                if sample.kind == "source":
                    in_rate += sample.in_rate
                    lag = self._lag_probe(op) if self._lag_probe is not None else None
                    for split, records in (lag or {}).items():
                        split_lag[f"{op.name}/{split}"] = records
                        m.split_lag.labels(job, op.name, split).set(records)
                elif sample.kind == "sink":
                    out_rate += sample.in_rate
            ts = self._sample_task(job, t, now_ms)
            tasks.append(ts)
            if ts.watermark_ms is not None:
                watermarks.append(ts.watermark_ms)
        self.checkpoints.poll(now_ms)
        status = JobStatus(
            job=job,
            sampled_ms=now_ms,
            operators=tuple(ops),
            tasks=tuple(tasks),
            split_lag=split_lag,
            checkpoints=self.checkpoints.history(),
            restarts=self.restarts,
            recovery_ms=self.recovery_ms,
            records_in_rate=in_rate,
            records_out_rate=out_rate,
            dead_letters=dead,
            watermark_ms=min(watermarks) if watermarks else None,
            last_checkpoint_id=self.checkpoints.last_completed_id,
            last_checkpoint_ms=self.checkpoints.last_completed_ms,
            connectors=tuple(connectors),
        )
        with self._lock:
            self._status = status
        return status

    def connectors_now(self) -> tuple[ConnectorSample, ...]:
        """Read every reporting connector now, from any thread, without publishing.

        The dashboard uses it: a sink blocked in a retry wait blocks its task's
        thread, and with it the sampling hook, exactly when its breaker matters.
        """
        return tuple(
            ConnectorSample(op.name, t.subtask, stats)
            for t in list(self._tasks)
            for op in t.chain
            if isinstance(op, ReportsConnectorStats) and (stats := op.connector_stats())
        )

    def status(self) -> JobStatus:
        """The latest sample (any thread)."""
        with self._lock:
            return self._status

    def _sample_operator(
        self, job: str, t: TaskView, op: OperatorView, elapsed_s: float
    ) -> OperatorSample:
        sub = t.subtask
        key = (op.name, sub)
        now = (op.records_in, op.records_out, op.filtered, op.late, op.dead_lettered)
        prev = self._prev.get(key, (0, 0, 0, 0, 0))
        m = self.metrics
        labels = (job, op.name, str(sub))
        counters = (m.records_in, m.records_out, m.filtered, m.late, m.dead_lettered)
        for counter, cur, old in zip(counters, now, prev, strict=True):
            # labels() also creates the series at 0, so a scrape sees every subtask
            child = counter.labels(*labels)
            if cur > old:
                child.inc(cur - old)
        self._prev[key] = now
        in_rate = (now[0] - prev[0]) / elapsed_s if elapsed_s > 0 else 0.0
        out_rate = (now[1] - prev[1]) / elapsed_s if elapsed_s > 0 else 0.0
        m.in_rate.labels(*labels).set(in_rate)
        m.out_rate.labels(*labels).set(out_rate)
        obs = self._observers.get(key)
        if obs is not None:
            for error, count in obs.by_error.items():
                ekey = (op.name, sub, error)
                seen = self._seen_errors.get(ekey, 0)
                if count > seen:
                    m.dead_letters_by_error.labels(*labels, error).inc(count - seen)
                    self._seen_errors[ekey] = count
        return OperatorSample(
            operator=op.name,
            subtask=sub,
            task=t.name,
            kind=getattr(getattr(op, "spec", None), "kind", "operator"),
            records_in=now[0],
            records_out=now[1],
            filtered=now[2],
            late=now[3],
            dead_lettered=now[4],
            in_rate=in_rate,
            out_rate=out_rate,
        )

    def _publish_connector(
        self, job: str, operator: str, subtask: int, stats: ConnectorStats
    ) -> ConnectorSample:
        """Set the breaker gauge and publish the growth of the connector's counts."""
        m = self.metrics
        labels = (job, operator, str(subtask))
        m.breaker_state.labels(*labels).set(BREAKER_STATES.index(stats.breaker))
        groups = (
            ("retries", m.connector_retries, stats.retries),
            ("rejected", m.rows_rejected, stats.rejected),
            ("written", m.rows_written, {"": stats.rows_written}),
            ("transactions", m.transactions, {"": stats.transactions}),
        )
        for kind, counter, counts in groups:
            for code, count in counts.items():
                key = (operator, subtask, kind, code)
                seen = self._seen_connector.get(key, 0)
                child = counter.labels(*labels, code) if code else counter.labels(*labels)
                if count > seen:
                    child.inc(count - seen)
                    self._seen_connector[key] = count
        key = (operator, subtask, "transaction_s", "")
        # seconds are floats: remembered ×1e6 in the int-valued map of published counts
        seen_us = self._seen_connector.get(key, 0)
        now_us = int(stats.transaction_s * 1e6)
        if now_us > seen_us:
            m.transaction_time.labels(*labels).inc((now_us - seen_us) / 1e6)
            self._seen_connector[key] = now_us
        return ConnectorSample(operator, subtask, stats)

    def _sample_task(self, job: str, t: TaskView, now_ms: int) -> TaskSample:
        head = t.chain[0].name
        labels = (job, head, str(t.subtask))
        m = self.metrics
        steps, blocked = t.steps, t.backpressured_steps
        p_steps, p_blocked = self._prev_steps.get(t.name, (0, 0))
        self._prev_steps[t.name] = (steps, blocked)
        d_blocked = blocked - p_blocked
        d_total = max(steps - p_steps, d_blocked)
        ratio = d_blocked / d_total if d_total > 0 else 0.0
        input_usage = _usage(t.inputs)
        output_usage = _usage([c for w in t.writers for c in w.channels])
        wm = _watermark(t)
        lag = now_ms - wm if wm is not None else None
        m.backpressure.labels(*labels).set(ratio)
        m.input_usage.labels(*labels).set(input_usage)
        m.output_usage.labels(*labels).set(output_usage)
        if wm is not None and lag is not None:
            m.watermark.labels(*labels).set(wm)
            m.watermark_lag.labels(*labels).set(lag)
        return TaskSample(
            task=t.name,
            head=head,
            subtask=t.subtask,
            backpressured_ratio=ratio,
            input_usage=input_usage,
            output_usage=output_usage,
            watermark_ms=wm,
            watermark_lag_ms=lag,
        )


def _usage(channels: Sequence[Any]) -> float:
    """Buffered buffers / capacity over ``channels`` (0 when there are none)."""
    capacity = sum(c.capacity for c in channels)
    return sum(c.buffered_buffers for c in channels) / capacity if capacity else 0.0


def _watermark(t: TaskView) -> int | None:
    """The task's current watermark, or ``None`` before the first (or after the last) one."""
    valve = t.chain[0].valve if t.is_source else getattr(t, "valve", None)
    if valve is None:
        return None
    wm = int(valve.current())
    return wm if -_NO_WATERMARK < wm < _NO_WATERMARK else None
