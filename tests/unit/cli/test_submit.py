"""A job submitted to a `weirflow coordinator` carries its runtime options and alert rules."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from weirflow.cli.run_autoscale import parse_autoscale
from weirflow.cli.run_options import Guarantee, parse_alert
from weirflow.cli.submit import submission
from weirflow.metrics.autoscale import AutoscaleConfig
from weirflow.runtime import RuntimeOptions, control
from weirflow.runtime.restart import RestartStrategy
from weirflow.state import RocksDBStateBackend

SURFACES = {"alerts": [], "alert_webhook": None, "alert_every": timedelta(seconds=5)}


def _submit(runtime: RuntimeOptions, **surfaces: object) -> control.Submit:
    return submission(
        "job.py",
        2,
        None,
        Guarantee.at_least_once,
        None,
        RestartStrategy.none(),
        runtime,
        SURFACES | surfaces,
    )


def test_rocksdb_state_and_tracing_survive_the_wire(tmp_path: Path) -> None:
    """Scenario: --state-backend rocksdb --state-dir DIR --otel --startup-ramp: the coordinator
    decodes the same options and builds a RocksDB backend on the same folder from them."""
    runtime = RuntimeOptions(
        state_backend=RocksDBStateBackend(tmp_path / "state", cache_size_bytes=1 << 20),
        tracing=True,
        startup_ramp_s=2.5,
        ramp_start_rate=50,
    )
    sent = _submit(runtime)
    received = control.decode_message(control.encode_message(sent))
    assert received == sent
    assert isinstance(received, control.Submit)
    built = received.options.build()
    assert isinstance(built.state_backend, RocksDBStateBackend)
    assert built.state_backend.path == (tmp_path / "state").resolve()
    assert built.state_backend.cache_size_bytes == 1 << 20
    assert (built.tracing, built.startup_ramp_s, built.ramp_start_rate) == (True, 2.5, 50)
    assert received.alerts is None
    assert received.autoscale is None


def test_alert_rules_survive_the_wire() -> None:
    """Scenario: --alert lag_records>100 --alert restarts>0 --alert-webhook URL --alert-every
    250ms: the coordinator gets the parsed conditions, the URL and the period in ms."""
    conditions = [parse_alert("lag_records>100"), parse_alert("restarts>0")]
    sent = _submit(
        RuntimeOptions(),
        alerts=conditions,
        alert_webhook="http://127.0.0.1:9/hook",
        alert_every=timedelta(milliseconds=250),
    )
    received = control.decode_message(control.encode_message(sent))
    assert isinstance(received, control.Submit)
    assert received.alerts == control.AlertRules(conditions, "http://127.0.0.1:9/hook", 250)


def test_autoscale_bounds_survive_the_wire() -> None:
    """Scenario: --autoscale min=1,max=4,target-lag=2s,cooldown=30s,sustain=5s: the
    coordinator gets the same bounds and pace."""
    bounds = parse_autoscale("min=1,max=4,target-lag=2s,cooldown=30s,sustain=5s", 2)
    received = control.decode_message(
        control.encode_message(_submit(RuntimeOptions(), autoscale=bounds))
    )
    assert isinstance(received, control.Submit)
    assert received.autoscale == AutoscaleConfig(
        1, 4, timedelta(seconds=2), timedelta(seconds=30), timedelta(seconds=5)
    )


def test_a_submission_without_options_runs_on_the_defaults() -> None:
    """Scenario: a Submit from a client that sends no options: the runtime's defaults."""
    bare = control.Submit("/j.py", 1, 128, None, "at_least_once", None, RestartStrategy.none())
    received = control.decode_message(control.encode_message(bare))
    assert isinstance(received, control.Submit)
    assert received.options == control.RuntimeSpec.of(RuntimeOptions())
    assert received.alerts is None
    assert received.autoscale is None
