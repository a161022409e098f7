"""The observer of a checkpointed run and the dashboard's JSON API (in-process client)."""

from __future__ import annotations

import socket
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from weirflow import CheckpointConfig, Dataflow, RestartStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.errors import ConfigError
from weirflow.runtime import wall_clock_ms
from weirflow.web import JobObserver
from weirflow.web.app import create_app, serve_dashboard


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobObserver, object]:
    """A finished run of source → map → key_by → map → sink at parallelism 2, observed."""
    flow = Dataflow("dash")
    (
        flow.source(IterableSource(list(range(20_000)), partitions=2), name="numbers")
        .map(lambda v: v * 2, name="double")
        .key_by(lambda v: v % 5)
        .map(lambda v: v + 1, name="inc")
        .sink(CollectSink(), name="out")
    )
    observer = JobObserver(flow.graph, 2, wall_clock_ms, interval_ms=0)
    storage = str(tmp_path_factory.mktemp("chk"))
    result = flow.run(
        2,
        checkpoint=CheckpointConfig(storage=storage, interval=timedelta(milliseconds=1)),
        runtime=None,
        listener=observer,
    )
    return observer, result


def test_observer_counts_match_the_job_result(observed: tuple[JobObserver, object]) -> None:
    observer, result = observed
    status = observer.status()
    for name, counts in result.operators.items():  # type: ignore[attr-defined]
        subs = [o for o in status.operators if o.operator == name]
        assert len(subs) == 2
        assert sum(o.records_in for o in subs) == counts.records_in
        assert sum(o.records_out for o in subs) == counts.records_out
    completed = [c for c in status.checkpoints if c.status == "completed"]
    assert len(completed) == result.checkpoints_completed  # type: ignore[attr-defined]
    assert status.last_checkpoint_id == completed[-1].checkpoint_id
    reg = observer.metrics.registry
    assert reg.get_sample_value("weirflow_checkpoints_completed_total", {"job": "dash"}) == len(
        completed
    )
    assert reg.get_sample_value("weirflow_restarts_total", {"job": "dash"}) == 0


def test_api_job_graph_shows_chaining(observed: tuple[JobObserver, object]) -> None:
    observer, _ = observed
    graph = TestClient(create_app(observer)).get("/api/job").json()
    assert graph["parallelism"] == 2
    names = {o["id"]: o["name"] for o in graph["operators"]}
    assert sorted(names.values()) == ["double", "inc", "numbers", "out"]
    edges = {(names[e["from"]], names[e["to"]]): e for e in graph["edges"]}
    assert edges[("numbers", "double")]["chained"] is True
    assert edges[("double", "inc")]["chained"] is False
    assert edges[("double", "inc")]["partitioning"] == "key_by"
    assert edges[("inc", "out")]["chained"] is True
    chains = [sorted(names[i] for i in c["operators"]) for c in graph["chains"]]
    assert sorted(chains) == [["double", "numbers"], ["inc", "out"]]


def test_api_operators_checkpoints_lag_status(observed: tuple[JobObserver, object]) -> None:
    observer, _result = observed
    client = TestClient(create_app(observer))
    ops = {o["operator"]: o for o in client.get("/api/operators").json()}
    assert ops["inc"]["parallelism"] == 2
    assert ops["inc"]["records_in"] == 20_000
    assert ops["inc"]["records_in"] == ops["inc"]["records_out"]
    cps = client.get("/api/checkpoints").json()
    assert cps and all(c["status"] == "completed" for c in cps)
    assert all(
        c["duration_ms"] >= 0 and c["full_bytes"] >= c["incremental_bytes"] >= 0 for c in cps
    )
    assert client.get("/api/lag").json() == {}  # an iterable source has no end offsets to compare
    status = client.get("/api/status").json()
    assert status["last_checkpoint"] == cps[-1]["checkpoint_id"]
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="graph"' in page.text and 'id="workers"' in page.text
    assert client.get("/static/app.js").status_code == 200
    # an in-process run is one worker: this process, on this host, with every subtask
    (worker,) = client.get("/api/workers").json()
    assert worker["placed_on"] == worker["host"] == socket.gethostname()
    assert worker["subtasks"] == [0, 1]


def test_token_guard(observed: tuple[JobObserver, object]) -> None:
    observer, _ = observed
    client = TestClient(create_app(observer, token="s3cret"))
    assert client.get("/api/job").status_code == 401
    assert client.get("/api/job?token=wrong").status_code == 401
    assert client.get("/api/job?token=s3cret").status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/").status_code == 401
    assert client.get("/api/checkpoints").status_code == 401
    assert client.get("/static/app.js").status_code == 200  # code, not job data


def test_binding_beyond_loopback_needs_a_token(
    observed: tuple[JobObserver, object], tmp_path: Path
) -> None:
    observer, _ = observed
    with pytest.raises(ConfigError, match="token"):
        serve_dashboard(observer, 0, host="0.0.0.0")


class FailOnce:
    """Raises on the first call that sees ``at``; later attempts pass."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.failed = False

    def __call__(self, v: int) -> int:
        if v == self.at and not self.failed:
            self.failed = True
            raise ConnectionError("injected failure")  # transient: restarted
        return v


def test_in_process_restart_is_counted_with_its_recovery_time(tmp_path: Path) -> None:
    """Scenario: an operator fails once mid-run; the restart strategy restarts the job."""
    flow = Dataflow("restarts")
    out = CollectSink()
    (
        flow.source(IterableSource(list(range(30_000)), partitions=2), name="numbers")
        .map(FailOnce(20_000), name="flaky")
        .sink(out, name="out")
    )
    observer = JobObserver(flow.graph, 1, wall_clock_ms, interval_ms=0)
    result = flow.run(
        1,
        checkpoint=CheckpointConfig(storage=str(tmp_path), interval=timedelta(milliseconds=1)),
        restart=RestartStrategy.fixed_delay(2, timedelta(milliseconds=20)),
        listener=observer,
    )
    assert result.restarts == 1
    reg = observer.metrics.registry
    assert reg.get_sample_value("weirflow_restarts_total", {"job": "restarts"}) == 1
    recovery = reg.get_sample_value("weirflow_recovery_time_seconds_total", {"job": "restarts"})
    assert recovery is not None and recovery >= 0.02  # at least the restart delay
    status = observer.status()
    assert status.restarts == 1
    assert status.recovery_ms >= 20
    ids = [c.checkpoint_id for c in status.checkpoints]
    assert ids == sorted(set(ids)), "one history across attempts, ids increasing"


def test_a_taken_port_is_one_error_without_server_log_lines(
    observed: tuple[JobObserver, object], capfd: pytest.CaptureFixture[str]
) -> None:
    observer, _ = observed
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"listen on 127.0.0.1:{port}"):
            serve_dashboard(observer, port)
    captured = capfd.readouterr()
    assert "ERROR" not in captured.err + captured.out


def test_the_dashboard_serves_on_the_socket_it_bound(observed: tuple[JobObserver, object]) -> None:
    observer, _ = observed
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    server = serve_dashboard(observer, port)
    try:
        with urllib.request.urlopen(f"{server.url}api/status", timeout=10) as response:
            assert response.status == 200
    finally:
        server.close()


def test_api_connectors_shows_an_open_breaker() -> None:
    """Scenario: a sink reports its breaker open; /api/connectors says so, and the page has
    the style that paints it red."""
    from weirflow.metrics import ConnectorSample, ConnectorStats
    from weirflow.web.app import connector_rows

    stats = ConnectorStats("open", {"OperationalError": 3}, 120, {"23502": 2}, 4, 0.5)
    rows = connector_rows([ConnectorSample("pg", 1, stats)])
    assert rows == [
        {
            "operator": "pg",
            "subtask": 1,
            "breaker": "open",
            "retries": {"OperationalError": 3},
            "rows_written": 120,
            "rejected": {"23502": 2},
            "transactions": 4,
            "transaction_s": 0.5,
        }
    ]
    css = (Path(create_app.__code__.co_filename).parent / "static" / "style.css").read_text()
    assert ".breaker-open" in css and "#c0262d" in css.split(".breaker-open")[1].split("}")[0]
