"""The dashboard and ``weirflow status`` of a job on 2 worker processes show its operators and
its connectors, from the workers' heartbeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import RUNNING_COUNTS, run_job, stop
from scraping import free_port

from weirflow.eventlog import EventLog, Record

pytestmark = pytest.mark.slow

N = 3000
OPERATORS = ["events", "one", "count", "out"]


def api(port: int, path: str) -> Any:
    """GET ``path`` of the dashboard, or ``None`` while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def write_input(log_dir: Path) -> None:
    """``N`` events of 10 users in ``events`` (3 partitions); ``counts`` (2) for the output."""
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("counts", 2)
        users = [f"u{i % 10}" for i in range(N)]
        records = [Record(json.dumps({"user": u}).encode(), key=u.encode()) for u in users]
        lg.append("events", records)


def output_records(log_dir: Path) -> int:
    with EventLog(log_dir) as lg:
        partitions = range(lg.partition_count("counts"))
        return sum(len(lg.read("counts", p, 0, max_records=N + 1)) for p in partitions)


def test_operator_table_and_connectors_of_a_job_on_two_workers(tmp_path: Path) -> None:
    """Scenario: an unbounded event-log job (source → map → key_by → reduce → event-log sink)
    on 2 worker processes reads all N input records and waits for more: /api/operators
    shows every operator at parallelism 2 with N records in and out, /api/connectors both
    sink subtasks with closed breakers, and ``weirflow status`` prints the same operator
    table."""
    log_dir, chk, run_log = tmp_path / "log", tmp_path / "chk", tmp_path / "run.log"
    write_input(log_dir)
    port = free_port()
    proc = run_job(
        log_dir, chk, "--workers=2", "--checkpoint-interval=200ms", f"--ui-port={port}",
        job=RUNNING_COUNTS, stderr=open(run_log, "wb"),  # noqa: SIM115
    )  # fmt: skip
    operators: dict[str, dict[str, Any]] = {}
    connectors: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        # the counts arrive with the workers' heartbeats: wait until they have seen every record
        while [o.get("records_in") for o in operators.values()] != [N] * 4 or len(connectors) < 2:
            assert proc.poll() is None, run_log.read_text()[-3000:]
            assert time.monotonic() < deadline, (operators, connectors)
            time.sleep(0.3)
            operators = {o["operator"]: o for o in api(port, "/api/operators") or []}
            connectors = api(port, "/api/connectors") or []
        status_line = api(port, "/api/status")
        status = subprocess.run(
            [sys.executable, "-m", "weirflow.cli", "status", "running_counts",
             f"--checkpoint-dir={chk}"],
            env=dict(os.environ, COLUMNS="200"), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        stop(proc)
    assert proc.returncode == 0, run_log.read_text()[-3000:]
    assert output_records(log_dir) == N  # one running count per input record, exactly once

    assert list(operators) == OPERATORS
    assert [operators[o]["kind"] for o in OPERATORS] == ["source", "map", "rolling_reduce", "sink"]
    for name in OPERATORS:
        row = operators[name]
        assert row["parallelism"] == 2, row
        assert (row["records_in"], row["filtered"], row["late"], row["dead_lettered"]) == (
            N, 0, 0, 0
        ), row  # fmt: skip
        if name != "out":
            assert row["records_out"] == N, row  # one record out per record in
    assert [(c["operator"], c["subtask"], c["breaker"]) for c in connectors] == [
        ("out", 0, "closed"),
        ("out", 1, "closed"),
    ]
    assert status_line["dead_letters"] == 0

    assert status.returncode == 0, status.stderr
    cells = [line.replace("│", " ").split() for line in status.stdout.splitlines()]
    rows = {r[0]: r for r in cells if r and r[0] in OPERATORS}
    assert list(rows) == OPERATORS, status.stdout
    total = f"{N:,}"
    for name in OPERATORS:
        # operator, kind, subtasks, in, ...: the same counts as the dashboard's (no record
        # arrived in between)
        assert rows[name][2:4] == ["2", total], status.stdout
