"""A Grafana dashboard for weirflow's metrics, built with ``grafana-foundation-sdk``.

Four rows: throughput and lag, dead letters and failures, latency and
backpressure, checkpoints. Variables: ``datasource`` (a Prometheus data
source), ``job`` (the dataflow's name, from the ``job`` label weirflow sets:
scrape with ``honor_labels: true``) and ``operator`` (several or all; filters
the per-operator panels). Needs the ``ops`` extra (``pip install
'weirflow[ops]'``).
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from weirflow.metrics import names as n

UID = "weirflow-jobs"
_DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
_JOB = 'job="$job"'
_OPS = 'job="$job", operator=~"$operator"'
_RATE = "$__rate_interval"


def _panel(
    title: str, unit: str, *queries: tuple[str, str], description: str = ""
) -> timeseries.Panel:
    """A time-series panel of ``(PromQL, legend)`` queries, 12 columns wide."""
    p = timeseries.Panel().title(title).unit(unit).datasource(_DS).span(12).height(8)
    if description:
        p = p.description(description)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        p = p.with_target(
            prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(_DS)
        )
    return p


def _quantiles(metric: str, *by: str) -> list[tuple[str, str]]:
    group = ", ".join(("le", *by))
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{_JOB}}}[{_RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    ]


def _per_operator(counter: str) -> str:
    """Records/s of ``counter`` per selected operator."""
    return f"sum by (operator) (rate({counter}_total{{{_OPS}}}[{_RATE}]))"


def dashboard() -> db.Dashboard:
    """The dashboard builder (see the module docstring)."""
    d = (
        db.Dashboard("weirflow jobs")
        .uid(UID)
        .tags(["weirflow"])
        .refresh("10s")
        .time("now-1h", "now")
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            db.QueryVariable("job")
            .label("Job")
            .datasource(_DS)
            .query(f"label_values({n.RECORDS_IN}_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_variable(
            db.QueryVariable("operator")
            .label("Operator")
            .datasource(_DS)
            .query(f"label_values({n.RECORDS_IN}_total{{{_JOB}}}, operator)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for row, panels in _rows():
        d = d.with_row(db.Row(row))
        for p in panels:
            d = d.with_panel(p)
    return d


def _rows() -> list[tuple[str, list[timeseries.Panel]]]:
    lag = f"{n.SPLIT_LAG}{{{_JOB}}}"
    read = (
        f"sum(sum by (operator) (rate({n.RECORDS_IN}_total{{{_JOB}}}[{_RATE}]))"
        f" and on (operator) {lag})"
    )
    return [
        (
            "Throughput and lag",
            [
                _panel(
                    "Records per second",
                    "rps",
                    (_per_operator(n.RECORDS_IN), "{{operator}} in"),
                    (_per_operator(n.RECORDS_OUT), "{{operator}} out"),
                ),
                _panel(
                    "Source lag (records not yet read)",
                    "short",
                    (f"sum by (operator, split) ({lag})", "{{split}}"),
                ),
                _panel(
                    "Read rate and ingestion",
                    "rps",
                    (read, "read"),
                    (f"{read} + sum(deriv({lag}[{_RATE}]))", "ingestion (read + lag growth)"),
                ),
                _panel(
                    "Watermark lag",
                    "s",
                    (f"max by (task) ({n.WATERMARK_LAG}{{{_JOB}}}) / 1000", "{{task}}"),
                    description="Processing time minus each task's watermark.",
                ),
            ],
        ),
        (
            "Dead letters and failures",
            [
                _panel(
                    "Dead letters",
                    "short",
                    (
                        f"sum by (operator, error_type) "
                        f"(increase({n.DEAD_LETTERS_BY_ERROR}_total{{{_OPS}}}[{_RATE}]))",
                        "{{operator}} {{error_type}}",
                    ),
                ),
                _panel(
                    "Restarts, rescales and open circuit breakers",
                    "short",
                    (f"increase({n.RESTARTS}_total{{{_JOB}}}[10m])", "restarts (10 min)"),
                    (
                        f"sum by (direction) "
                        f"(increase({n.AUTOSCALE_DECISIONS}_total{{{_JOB}}}[10m]))",
                        "rescales {{direction}} (10 min)",
                    ),
                    (
                        f"max by (connector) ({n.CIRCUIT_BREAKER_STATE}{{{_JOB}}})",
                        "{{connector}} open",
                    ),
                ),
            ],
        ),
        (
            "Latency and backpressure",
            [
                _panel("End-to-end latency", "s", *_quantiles(n.END_TO_END_LATENCY)),
                _panel(
                    "Backpressure",
                    "percentunit",
                    (f"max by (task) ({n.BACKPRESSURE_RATIO}{{{_JOB}}})", "{{task}}"),
                ),
            ],
        ),
        (
            "Checkpoints",
            [
                _panel(
                    "Checkpoint duration and alignment",
                    "s",
                    *_quantiles(n.CHECKPOINT_DURATION),
                    (f"{n.CHECKPOINT_DURATION_P99}{{{_JOB}}}", "p99 of recent"),
                    *[(e, f"alignment {lg}") for e, lg in _quantiles(n.CHECKPOINT_ALIGNMENT)],
                ),
                _panel(
                    "Checkpoints completed and failed",
                    "short",
                    (f"increase({n.CHECKPOINTS_COMPLETED}_total{{{_JOB}}}[{_RATE}])", "completed"),
                    (f"increase({n.CHECKPOINTS_FAILED}_total{{{_JOB}}}[{_RATE}])", "failed"),
                ),
                _panel(
                    "Time since the last completed checkpoint",
                    "s",
                    (f"{n.CHECKPOINT_AGE}{{{_JOB}}}", "age"),
                ),
                _panel(
                    "Checkpoint size",
                    "bytes",
                    (f"{n.CHECKPOINT_SIZE_FULL}{{{_JOB}}}", "full"),
                    (f"{n.CHECKPOINT_SIZE_INCREMENTAL}{{{_JOB}}}", "written"),
                ),
            ],
        ),
    ]


def dashboard_json() -> str:
    """The dashboard as Grafana's JSON model (import it in Grafana: Dashboards → Import)."""
    return json.dumps(dashboard().build(), cls=JSONEncoder, indent=2, sort_keys=True)
