"""The Prometheus metric objects of one job, in their own registry.

Only the sampling hook and the checkpoint tracker write here, a few times
per second at most; nothing on the record path touches a metric.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from weirflow.metrics import names as n

# Checkpoint and latency buckets (s): from a few ms on a laptop to a minute under load.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


class JobRegistry:
    """Holds every metric of one job.

    Args:
        job: the job name (value of the ``job`` label).
        registry: where the metrics are registered; a fresh one by default,
            so that several jobs (or tests) in one process never collide.

    Attributes:
        registry: the :class:`prometheus_client.CollectorRegistry` to expose.
        records_in … latency: one attribute per metric of
            :mod:`weirflow.metrics.names`; job-wide metrics are already bound
            to the ``job`` label, the others take their labels at use.
    """

    def __init__(self, job: str, registry: CollectorRegistry | None = None) -> None:
        self.job = job
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        op, task, split, jobl = n.OPERATOR_LABELS, n.TASK_LABELS, n.SPLIT_LABELS, n.JOB_LABELS
        self.records_in = Counter(n.RECORDS_IN, "Records received.", op, registry=r)
        self.records_out = Counter(n.RECORDS_OUT, "Records emitted (main output).", op, registry=r)
        self.filtered = Counter(n.RECORDS_FILTERED, "Records dropped by a filter.", op, registry=r)
        self.late = Counter(n.RECORDS_LATE, "Records routed to the late output.", op, registry=r)
        self.dead_lettered = Counter(
            n.RECORDS_DEAD_LETTERED, "Records routed to the dead-letter output.", op, registry=r
        )
        self.dead_letters_by_error = Counter(
            n.DEAD_LETTERS_BY_ERROR,
            "Dead letters by the error type that sent them there.",
            n.DEAD_LETTER_LABELS,
            registry=r,
        )
        self.breaker_state = Gauge(
            n.CONNECTOR_BREAKER_STATE,
            "Circuit breaker of the connector: 0 closed, 1 half-open, 2 open.",
            op,
            registry=r,
        )
        self.connector_retries = Counter(
            n.CONNECTOR_RETRIES,
            "Calls to the external system retried, by error class.",
            n.CONNECTOR_ERROR_LABELS,
            registry=r,
        )
        self.rows_written = Counter(
            n.SINK_ROWS_WRITTEN, "Rows the sink committed to its external system.", op, registry=r
        )
        self.transactions = Counter(
            n.SINK_TRANSACTIONS,
            "Transactions the sink ended in its external system.",
            op,
            registry=r,
        )
        self.transaction_time = Counter(
            n.SINK_TRANSACTION_TIME,
            "Time spent ending those transactions, retries included (mean = this / count).",
            op,
            registry=r,
        )
        self.rows_rejected = Counter(
            n.SINK_ROWS_REJECTED,
            "Rows the external system refused for their content (dead-lettered), by its code "
            "(SQLSTATE).",
            n.CONNECTOR_CODE_LABELS,
            registry=r,
        )
        self.in_rate = Gauge(n.RECORDS_IN_RATE, "Records received per second.", op, registry=r)
        self.out_rate = Gauge(n.RECORDS_OUT_RATE, "Records emitted per second.", op, registry=r)
        self.backpressure = Gauge(
            n.BACKPRESSURE_RATIO,
            "Share of the task's steps that found an output without credit.",
            task,
            registry=r,
        )
        self.input_usage = Gauge(
            n.INPUT_BUFFER_USAGE, "Buffered / capacity of input channels.", task, registry=r
        )
        self.output_usage = Gauge(
            n.OUTPUT_BUFFER_USAGE, "Buffered / capacity of output channels.", task, registry=r
        )
        self.watermark = Gauge(n.WATERMARK, "The task's current watermark (ms).", task, registry=r)
        self.watermark_lag = Gauge(
            n.WATERMARK_LAG, "Processing time minus the task's watermark (ms).", task, registry=r
        )
        self.split_lag = Gauge(
            n.SPLIT_LAG, "Records of the split not read yet (end − position).", split, registry=r
        )
        self.triggered = Counter(
            n.CHECKPOINTS_TRIGGERED, "Checkpoints triggered.", jobl, registry=r
        ).labels(job)
        self.completed = Counter(
            n.CHECKPOINTS_COMPLETED, "Checkpoints completed.", jobl, registry=r
        ).labels(job)
        self.failed = Counter(
            n.CHECKPOINTS_FAILED,
            "Checkpoints failed (declined, timed out, aborted).",
            jobl,
            registry=r,
        ).labels(job)
        self.duration = Histogram(
            n.CHECKPOINT_DURATION,
            "Checkpoint trigger-to-completion time.",
            jobl,
            buckets=_DURATION_BUCKETS,
            registry=r,
        ).labels(job)
        self.duration_p50 = Gauge(
            n.CHECKPOINT_DURATION_P50, "Median of recent checkpoint durations.", jobl, registry=r
        ).labels(job)
        self.duration_p99 = Gauge(
            n.CHECKPOINT_DURATION_P99,
            "99th percentile of recent checkpoint durations.",
            jobl,
            registry=r,
        ).labels(job)
        self.alignment = Histogram(
            n.CHECKPOINT_ALIGNMENT,
            "Barrier injection to the last task's aligned synchronous snapshot.",
            jobl,
            buckets=_DURATION_BUCKETS,
            registry=r,
        ).labels(job)
        self.size_full = Gauge(
            n.CHECKPOINT_SIZE_FULL,
            "State bytes of the last completed checkpoint.",
            jobl,
            registry=r,
        ).labels(job)
        self.size_incremental = Gauge(
            n.CHECKPOINT_SIZE_INCREMENTAL,
            "Bytes written for the last completed checkpoint.",
            jobl,
            registry=r,
        ).labels(job)
        self.last_completed_id = Gauge(
            n.CHECKPOINT_LAST_COMPLETED_ID,
            "Id of the last completed checkpoint.",
            jobl,
            registry=r,
        ).labels(job)
        self.age = Gauge(
            n.CHECKPOINT_AGE, "Time since the last completed checkpoint.", jobl, registry=r
        ).labels(job)
        self.restarts = Counter(n.RESTARTS, "Job restarts.", jobl, registry=r).labels(job)
        self.recovery = Counter(
            n.RECOVERY_TIME,
            "Time spent recovering: down, restarting and restoring.",
            jobl,
            registry=r,
        ).labels(job)
        self.autoscale = Counter(
            n.AUTOSCALE_DECISIONS,
            "Lag-driven rescales decided (direction: up or down).",
            n.AUTOSCALE_LABELS,
            registry=r,
        )
        self.latency = Histogram(
            n.END_TO_END_LATENCY,
            "Sampled time from source ingestion to sink write (latency markers).",
            jobl,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(job)
