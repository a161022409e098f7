"""What ``weirflow run`` shows of its job: metrics, dashboard, progress, the final counts."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from weirflow.api import Dataflow
from weirflow.connectors import ReportsLag
from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.metrics import (
    ALERT_WINDOW,
    AlertCondition,
    AlertEvaluator,
    AlertWatcher,
    MetricsServer,
    ProgressReporter,
    names,
    serve_metrics,
)
from weirflow.records import JobResult
from weirflow.runtime import RunListener, control, wall_clock_ms
from weirflow.runtime.cluster_metrics import ClusterSampler
from weirflow.runtime.coordinator import JobCoordinator
from weirflow.runtime.endpoint import ControlEndpoint
from weirflow.runtime.launched import CoordinatorWatch
from weirflow.web import JobObserver

err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")


def split_lag(source_logic: Any) -> dict[str, int] | None:
    """Records not yet read per split of a source subtask, from a reader that
    :class:`~weirflow.connectors.ReportsLag` (the event log's, Kafka's); ``None`` for others.

    Called on the scheduler thread that owns the reader.
    """
    reader = getattr(source_logic, "reader", None)
    return reader.lag() if isinstance(reader, ReportsLag) else None


class Surfaces:
    """What a worker shows of its job: metrics endpoint, dashboard, progress line, alerts.

    Args:
        observer: the job's observer.
        metrics_port: port of ``/metrics`` (``None``: not served).
        metrics_host: address of ``/metrics``.
        ui_port: port of the dashboard (``None``: not served).
        ui_host: address of the dashboard.
        ui_token: the dashboard's access token.
        log_format: ``text`` shows the live progress line on a terminal;
            ``json`` logs progress records instead.
        alerts: conditions to evaluate every ``alert_every`` (none: no watcher).
        alert_webhook: where the watcher posts each change, or ``None``.
        alert_every: time between evaluations.

    Raises:
        ConfigError: a port cannot be bound, or the dashboard binds beyond
            loopback without a token.
    """

    def __init__(
        self,
        observer: JobObserver,
        metrics_port: int | None,
        metrics_host: str,
        ui_port: int | None,
        ui_host: str,
        ui_token: str | None,
        log_format: str,
        alerts: list[AlertCondition],
        alert_webhook: str | None,
        alert_every: timedelta,
    ) -> None:
        self.metrics: MetricsServer | None = None
        self.dashboard: Any = None
        if metrics_port is not None:
            self.metrics = bind_metrics(observer, metrics_port, metrics_host)
        if ui_port is not None:
            from weirflow.web.app import serve_dashboard

            self.dashboard = serve_dashboard(observer, ui_port, ui_host, ui_token)
        self.progress = ProgressReporter(
            observer.status, wall_clock_ms, "json" if log_format == "json" else "live"
        )
        self.progress.start()
        self.alerts: AlertWatcher | None = None
        if alerts:
            self.alerts = AlertWatcher(
                observer.status, wall_clock_ms, alerts, alert_webhook, alert_every
            )
            self.alerts.start()

    def close(self) -> None:
        """Stop the progress line, the alert watcher and both servers."""
        self.progress.stop()
        if self.alerts is not None:
            self.alerts.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self.dashboard is not None:
            self.dashboard.close()


def bind_metrics(observer: JobObserver, port: int, host: str) -> MetricsServer:
    """Serve the observer's metrics at ``host:port``, retrying briefly while a killed
    predecessor still holds the port.

    Raises:
        ConfigError: the port stays taken.
    """
    # A killed worker's port is free again at once (SO_REUSEADDR), but a worker that is
    # still exiting may hold it a moment longer: retry briefly, bounded.
    for _ in range(25):
        try:
            return serve_metrics(observer.metrics.registry, port, host)
        except OSError as e:
            error = e
            time.sleep(0.2)
    raise ConfigError(f"cannot serve metrics on {host}:{port}: {error}")


def make_observer(
    flow: Dataflow, parallelism: int, started_ms: int, inner: RunListener
) -> JobObserver:
    """The worker's job observer; restarts and recovery time come from the supervisor."""
    return JobObserver(
        flow.graph,
        parallelism,
        wall_clock_ms,
        lag_probe=split_lag,
        restarts=int(os.environ.get(names.ENV_RESTARTS, "0")),
        recovery_ms=int(os.environ.get(names.ENV_RECOVERY_MS, "0")),
        started_ms=started_ms,
        inner=inner,
    )


def coordinator_watch(
    graph: LogicalGraph,
    parallelism: int,
    surfaces: dict[str, Any],
    endpoint: ControlEndpoint | None,
) -> CoordinatorWatch:
    """What watches the coordinator of a job on workers: the control endpoint answers status
    requests with its status, with ``--ui-port`` the dashboard shows it, and with ``--alert``
    an :class:`~weirflow.metrics.AlertWatcher` evaluates the conditions on its view of the
    cluster (:class:`~weirflow.runtime.cluster_metrics.ClusterSampler`).

    Args:
        graph: the job's logical graph.
        parallelism: subtasks per operator.
        surfaces: ``weirflow run``'s surface options (``ui_port``, ``ui_host``, ``ui_token``,
            ``alerts``, ``alert_webhook``, ``alert_every``).
        endpoint: the job's control endpoint, or ``None`` (a job without checkpoints).
    """
    dashboard = None
    if surfaces["ui_port"] is not None:
        from weirflow.web.cluster import dashboard_watch

        dashboard = dashboard_watch(
            graph,
            parallelism,
            wall_clock_ms,
            surfaces["ui_port"],
            surfaces["ui_host"],
            surfaces["ui_token"],
        )

    # one set of alert states for every run of the job (a rescale runs it again)
    evaluator = AlertEvaluator(surfaces["alerts"], ALERT_WINDOW)

    def watch(coordinator: JobCoordinator) -> Callable[[], None]:
        if endpoint is not None:
            endpoint.status = coordinator.status
        # the dashboard first: it may refuse its port, and then no alert thread is left behind
        undashboard = dashboard(coordinator) if dashboard is not None else None
        alerts = None
        if surfaces["alerts"]:
            alerts = AlertWatcher(
                ClusterSampler(coordinator, graph.name, wall_clock_ms).status,
                wall_clock_ms,
                surfaces["alerts"],
                surfaces["alert_webhook"],
                surfaces["alert_every"],
                evaluator=evaluator,
            )
            alerts.start()

        def unwatch() -> None:
            if alerts is not None:
                alerts.stop()
            if undashboard is not None:
                undashboard()

        return unwatch

    return watch


def alert_rules(surfaces: dict[str, Any]) -> control.AlertRules | None:
    """The ``--alert`` rules of ``weirflow run``'s surface options (``alerts``,
    ``alert_webhook``, ``alert_every``) as a coordinator elsewhere receives them;
    ``None`` without any ``--alert``."""
    if not surfaces["alerts"]:
        return None
    return control.AlertRules(
        conditions=list(surfaces["alerts"]),
        webhook=surfaces["alert_webhook"],
        every_ms=int(surfaces["alert_every"] / timedelta(milliseconds=1)),
    )


def rules_watch(
    rules: control.AlertRules, graph: LogicalGraph, parallelism: int
) -> CoordinatorWatch:
    """What evaluates ``rules`` on a coordinator that runs elsewhere than ``weirflow run``
    (a ``weirflow coordinator``, a detached Ray actor), as :func:`coordinator_watch`
    evaluates them for a job on ``--workers``.

    Args:
        rules: the job's alert rules.
        graph: the job's logical graph.
        parallelism: subtasks per operator.
    """
    surfaces = {
        "ui_port": None,
        "alerts": rules.conditions,
        "alert_webhook": rules.webhook,
        "alert_every": timedelta(milliseconds=rules.every_ms),
    }
    return coordinator_watch(graph, parallelism, surfaces, None)


def submitted_job_watch(submit: control.Submit, graph: LogicalGraph) -> CoordinatorWatch | None:
    """What watches a ``weirflow coordinator`` while a submitted job runs: its alert rules
    (:func:`rules_watch`); ``None`` for a job without any."""
    if submit.alerts is None:
        return None
    return rules_watch(submit.alerts, graph, submit.parallelism)


def print_summary(result: JobResult, log_format: str, stopped: bool) -> None:
    """Print the job's counts (a table on stderr, or one JSON log line with ``json``)."""
    how = "stopped" if stopped else "finished"
    if log_format == "json":
        log.info(
            how,
            extra={
                "fields": {
                    "job": result.job,
                    "operators": {k: c._asdict() for k, c in result.operators.items()},
                    "checkpoints_completed": result.checkpoints_completed,
                    "duration_ms": result.duration_ms,
                }
            },
        )
        return
    table = Table(title=f"job {result.job}: {how}", show_edge=False)
    for col in ("operator", "in", "out", "filtered", "late", "dead letters"):
        table.add_column(col, justify="right" if col != "operator" else "left")
    for name, c in result.operators.items():
        table.add_row(
            name,
            str(c.records_in),
            str(c.records_out),
            str(c.filtered),
            str(c.late),
            str(c.dead_lettered),
        )
    err.print(table)
    err.print(
        f"checkpoints completed: {result.checkpoints_completed}   "
        f"wall time: {result.duration_ms / 1000:.1f} s"
    )
