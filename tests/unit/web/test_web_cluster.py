"""The dashboard and ``weirflow status`` of a job on workers: samples from the workers' heartbeats.

The coordinator here is real (its listener bound, never started); its workers
are entries holding the latest heartbeat as its connection reader stores one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from rich.console import Console
from starlette.testclient import TestClient

from weirflow import Dataflow
from weirflow.cli.status import operator_table
from weirflow.connectors import CollectSink, IterableSource
from weirflow.runtime import control
from weirflow.runtime.cluster_metrics import ClusterSampler
from weirflow.runtime.coordinator import JobCoordinator, JobSpec
from weirflow.runtime.membership import WorkerEntry, WorkerStatus
from weirflow.runtime.wire import FramedConnection, new_secret
from weirflow.web.app import create_app, operator_rows
from weirflow.web.cluster import ClusterObserver


def _flow() -> Dataflow:
    """numbers → double (chained) | key_by | inc → out (chained), at parallelism 2."""
    flow = Dataflow("dash_cluster")
    (
        flow.source(IterableSource(list(range(10)), partitions=2), name="numbers")
        .map(lambda v: v * 2, name="double")
        .key_by(lambda v: v % 5)
        .map(lambda v: v + 1, name="inc")
        .sink(CollectSink(), name="out")
    )
    return flow


class _Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def coordinator() -> Iterator[JobCoordinator]:
    c = JobCoordinator(new_secret())
    c.spec = JobSpec("job.py", _flow().graph, parallelism=2)
    c.attempt = 3
    yield c
    c.close()


def _join(c: JobCoordinator, worker_id: str, subtasks: list[int]) -> WorkerEntry:
    """A deployed worker of ``c`` (a real connection whose far end nobody reads)."""
    near, far = socket.socketpair()
    entry = WorkerEntry(
        control.Register(worker_id, 1, "here", "127.0.0.1:1", 1), FramedConnection(near, "w")
    )
    entry.move(WorkerStatus.DEPLOYED)
    entry.subtasks = subtasks
    c.workers[worker_id] = entry
    far.close()
    return entry


def _beat(entry: WorkerEntry, heartbeat: control.Heartbeat) -> None:
    """Keep ``heartbeat`` as the coordinator's reader of a deployed worker does."""
    entry.sample = heartbeat.counts
    entry.connectors = heartbeat.connectors
    entry.split_lag = heartbeat.split_lag


def _counts(n_in: int, dead: int = 0, filtered: int = 0) -> list[int]:
    return [n_in, n_in - dead - filtered, filtered, 0, dead]


def _report(breaker: str = "closed", rows: int = 0) -> control.ConnectorReport:
    return control.ConnectorReport(breaker, {"OperationalError": 2}, rows, {"23505": 1}, 4, 0.5)


def _two_workers(c: JobCoordinator) -> tuple[WorkerEntry, WorkerEntry]:
    a, b = _join(c, "w-a", [0]), _join(c, "w-b", [1])
    per_subtask = {"numbers": 100, "double": 100, "inc": 90, "out": 90}
    for entry, subtask in ((a, 0), (b, 1)):
        scale = subtask + 1  # the two subtasks' counts differ
        counts = {
            op: {subtask: _counts(n * scale, dead=subtask if op == "double" else 0)}
            for op, n in per_subtask.items()
        }
        _beat(
            entry,
            control.Heartbeat(
                3,
                counts,
                {"out": {subtask: _report("open" if subtask else "closed", 90 * scale)}},
                {f"numbers/{subtask}": 7},
            ),
        )
    return a, b


def test_operator_samples_follow_the_job_and_its_chains(coordinator: JobCoordinator) -> None:
    """Scenario: two workers, one subtask each, report their counts: one sample per
    operator subtask in job order, with the operator's kind and its chain's task."""
    _two_workers(coordinator)
    status = ClusterSampler(coordinator, "dash_cluster", _Clock()).status()
    assert [(o.operator, o.subtask) for o in status.operators] == [
        (op, s) for op in ("numbers", "double", "inc", "out") for s in (0, 1)
    ]
    by = {(o.operator, o.subtask): o for o in status.operators}
    assert by[("numbers", 1)].kind == "source" and by[("out", 0)].kind == "sink"
    assert by[("double", 1)].task == "numbers[1/2]"  # chained behind the source
    assert by[("out", 0)].task == "inc[0/2]"
    assert by[("double", 1)].records_in == 200 and by[("double", 1)].dead_lettered == 1
    assert status.dead_letters == 1
    assert status.split_lag == {"numbers/0": 7, "numbers/1": 7}


def test_operator_rows_sum_the_subtasks_as_for_a_job_in_one_process(
    coordinator: JobCoordinator,
) -> None:
    """Scenario: the dashboard's table of a job on workers: per operator the sum over
    its subtasks on both workers; task figures, which heartbeats do not carry, stay empty."""
    _two_workers(coordinator)
    status = ClusterSampler(coordinator, "dash_cluster", _Clock()).status()
    rows = {r["operator"]: r for r in operator_rows(status.operators, status.tasks)}
    assert list(rows) == ["numbers", "double", "inc", "out"]
    assert rows["numbers"]["parallelism"] == 2
    assert (rows["double"]["records_in"], rows["double"]["records_out"]) == (300, 299)
    assert rows["double"]["dead_lettered"] == 1
    assert rows["out"]["records_in"] == 270
    # not measured, rather than 0
    assert rows["out"]["watermark_ms"] is rows["out"]["backpressured_ratio"] is None
    assert rows["out"]["input_usage"] is rows["out"]["output_usage"] is None


def test_a_lost_workers_last_heartbeat_is_left_out(coordinator: JobCoordinator) -> None:
    """Scenario: a worker is lost: its last heartbeat no longer counts."""
    a, _ = _two_workers(coordinator)
    a.move(WorkerStatus.LOST)
    status = ClusterSampler(coordinator, "dash_cluster", _Clock()).status()
    assert {o.subtask for o in status.operators} == {1}
    assert [c.subtask for c in status.connectors] == [1]


def test_rates_come_from_successive_heartbeats_of_one_attempt(
    coordinator: JobCoordinator,
) -> None:
    """Scenario: counts grow by 500 records in 1 s: 500 records/s in and out; the job's
    read rate is the sources' and its output rate the sinks'; a new attempt (counts from
    0 again) starts without a rate instead of a negative one."""
    clock = _Clock()
    a = _join(coordinator, "w-a", [0, 1])
    ops = ("numbers", "double", "inc", "out")

    def beat(n: int, attempt: int = 3) -> None:
        _beat(a, control.Heartbeat(attempt, {op: {0: _counts(n), 1: _counts(n)} for op in ops}))

    sampler = ClusterSampler(coordinator, "dash_cluster", clock)
    beat(1000)
    first = sampler.status()
    assert all(o.in_rate == 0.0 for o in first.operators)  # one sample: no interval yet
    clock.now_ms += 1000
    beat(1500)
    second = sampler.status()
    assert {(o.in_rate, o.out_rate) for o in second.operators} == {(500.0, 500.0)}
    assert second.records_in_rate == second.records_out_rate == 1000.0  # two subtasks each
    coordinator.attempt = 4
    clock.now_ms += 1000
    beat(10, attempt=4)
    third = sampler.status()
    assert third.records_in_rate == 0.0
    assert {o.records_in for o in third.operators} == {10}


def test_api_operators_and_connectors_of_a_job_on_workers(coordinator: JobCoordinator) -> None:
    """Scenario: the dashboard's API over a coordinator: /api/operators has the workers'
    counts, /api/connectors each sink subtask's breaker and rows, /api/status the dead
    letters."""
    _two_workers(coordinator)
    observer = ClusterObserver(coordinator.spec.graph, 2, _Clock())  # type: ignore[union-attr]
    assert observer.connectors() == ()  # not watching yet
    observer.watch(coordinator)
    client = TestClient(create_app(observer))
    ops = {o["operator"]: o for o in client.get("/api/operators").json()}
    assert ops["inc"]["records_in"] == 270 and ops["inc"]["kind"] == "map"
    connectors = client.get("/api/connectors").json()
    assert [(c["operator"], c["subtask"], c["breaker"]) for c in connectors] == [
        ("out", 0, "closed"),
        ("out", 1, "open"),
    ]
    assert connectors[1]["rows_written"] == 180
    assert connectors[1]["retries"] == {"OperationalError": 2}
    assert connectors[1]["rejected"] == {"23505": 1}
    assert client.get("/api/status").json()["dead_letters"] == 1


def test_status_carries_the_counts_and_prints_the_operator_table(
    coordinator: JobCoordinator,
) -> None:
    """Scenario: ``weirflow status`` of a job on workers: the coordinator's answer carries
    the operator subtasks' counts across the control connection, and the command prints
    one row per operator, summed as the dashboard sums them."""
    _two_workers(coordinator)
    sent = coordinator.status()
    status = control.decode_message(control.encode_message(sent))
    assert isinstance(status, control.Status)
    assert status.operators == sent.operators and len(status.operators) == 8
    console = Console(record=True, width=200)
    console.print(operator_table(status.operators))
    cells = [line.replace("│", " ").split() for line in console.export_text().splitlines()[2:]]
    lines = {row[0]: row for row in cells}
    assert lines["double"] == ["double", "map", "2", "300", "299", "0", "0", "1"]
    assert lines["out"][:5] == ["out", "sink", "2", "270", "270"]


def test_status_before_a_job_has_no_operators() -> None:
    """Scenario: a coordinator that runs no job yet answers without operators."""
    c = JobCoordinator(new_secret())
    try:
        assert c.status().operators == ()
        assert ClusterSampler(c, "none", _Clock()).status().operators == ()
    finally:
        c.close()
