"""``weirflow ops``: what an on-call engineer loads into their tools (alert rules, dashboards)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated

import typer
import yaml

from weirflow.cli.app import app
from weirflow.cli.durations import parse_duration
from weirflow.metrics.alerts import RUNBOOKS, AlertThresholds, rule_file

ops = typer.Typer(help="Alert rules and dashboards for weirflow's metrics.", no_args_is_help=True)
app.add_typer(ops, name="ops")

_HEADER = (
    "# weirflow alerting rules (weirflow ops alerts). Scrape weirflow with honor_labels: true,\n"
    "# so that its series keep their own job label. Check with: promtool check rules FILE\n"
)


@ops.command("alerts")
def alerts(
    job: Annotated[
        str | None, typer.Option(help="Only this job's series (default: every job).")
    ] = None,
    lag_records: Annotated[
        int, typer.Option(min=0, help="Records not yet read above which lag alerts.")
    ] = 100_000,
    lag: Annotated[
        str, typer.Option(help="How far the sources' watermarks may trail processing time.")
    ] = "5m",
    latency: Annotated[str, typer.Option(help="p99 end-to-end latency that alerts.")] = "30s",
    checkpoint_interval: Annotated[
        str, typer.Option(help="The jobs' checkpoint interval (alert after 3 × it).")
    ] = "10s",
    checkpoint_timeout: Annotated[
        str, typer.Option(help="The jobs' checkpoint timeout (alert above 0.8 × it).")
    ] = "10m",
    hold: Annotated[
        str, typer.Option("--for", help="How long a flapping condition must hold.")
    ] = "5m",
    window: Annotated[str, typer.Option(help="Range of rate/increase/deriv.")] = "5m",
    restart_window: Annotated[str, typer.Option(help="Any restart in it alerts.")] = "10m",
    runbooks: Annotated[
        str, typer.Option(help="URL where docs/runbooks.md is served (runbook_url base).")
    ] = RUNBOOKS,
) -> None:
    """Print Prometheus alerting rules for weirflow's metrics (YAML, to stdout)."""
    thresholds = AlertThresholds(
        lag_records=lag_records,
        lag=parse_duration(lag),
        latency=parse_duration(latency),
        checkpoint_interval=parse_duration(checkpoint_interval),
        checkpoint_timeout=parse_duration(checkpoint_timeout),
        hold=parse_duration(hold),
        window=parse_duration(window),
        restart_window=parse_duration(restart_window),
    )
    text = yaml.safe_dump(
        rule_file(thresholds, job, runbooks), sort_keys=False, width=120, allow_unicode=True
    )
    typer.echo(_HEADER + text, nl=False)


@ops.command("grafana")
def grafana() -> None:
    """Print a Grafana dashboard (JSON) for weirflow's metrics, with job and operator variables."""
    if find_spec("grafana_foundation_sdk") is None:
        typer.echo(
            "error: the dashboard is built with grafana-foundation-sdk: "
            "pip install 'weirflow[ops]'",
            err=True,
        )
        raise typer.Exit(2)
    from weirflow.metrics.grafana import dashboard_json

    typer.echo(dashboard_json())
