"""Metrics of a running job: Prometheus registry and exporter, sampling, lag and latency.

See ``names`` for every metric name. Nothing here runs per record: the
:class:`RuntimeCollector` samples the runtime's own counters from a
scheduler hook, and end-to-end latency is sampled with latency markers (see
``checkpoints``).
"""

from weirflow.metrics import names
from weirflow.metrics.checkpoints import CheckpointTracker, CoordinatorView
from weirflow.metrics.collector import (
    LagProbe,
    ReportsConnectorStats,
    RuntimeCollector,
    TaskView,
)
from weirflow.metrics.exporter import DEFAULT_HOST, MetricsServer, serve_metrics
from weirflow.metrics.model import (
    BREAKER_STATES,
    CheckpointRecord,
    ConnectorSample,
    ConnectorStats,
    JobStatus,
    OperatorSample,
    TaskSample,
)
from weirflow.metrics.progress import (
    JsonFormatter,
    ProgressReporter,
    progress_fields,
    progress_text,
)
from weirflow.metrics.registry import JobRegistry
from weirflow.metrics.tracing import BatchTracer, configure_from_env
from weirflow.metrics.watch import (
    ALERT_WINDOW,
    AlertCondition,
    AlertEvaluator,
    AlertEvent,
    AlertState,
    AlertWatcher,
    Signal,
)

__all__ = [
    "ALERT_WINDOW",
    "BREAKER_STATES",
    "DEFAULT_HOST",
    "AlertCondition",
    "AlertEvaluator",
    "AlertEvent",
    "AlertState",
    "AlertWatcher",
    "BatchTracer",
    "CheckpointRecord",
    "CheckpointTracker",
    "ConnectorSample",
    "ConnectorStats",
    "CoordinatorView",
    "JobRegistry",
    "JobStatus",
    "JsonFormatter",
    "LagProbe",
    "MetricsServer",
    "OperatorSample",
    "ProgressReporter",
    "ReportsConnectorStats",
    "RuntimeCollector",
    "Signal",
    "TaskSample",
    "TaskView",
    "configure_from_env",
    "names",
    "progress_fields",
    "progress_text",
    "serve_metrics",
]
