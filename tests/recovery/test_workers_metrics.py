"""The coordinator's /metrics during a job on 2 worker processes: every worker, by label."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

N = 40_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _run_on_two_workers(
    tmp_path: Path, parallelism: int, option: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    """``weirflow run`` of the windowed job on 2 worker processes, with ``option`` and ``env``."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "weirflow.cli", "run", JOB, f"--parallelism={parallelism}",
            "--workers=2", f"--checkpoint-dir={tmp_path / 'chk'}", "--checkpoint-interval=200ms",
            option,
        ],
        env=dict(os.environ, WF_LOG_DIR=str(tmp_path / "log"), **env),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_metrics_show_every_worker_and_its_subtasks(tmp_path: Path) -> None:
    """Scenario: scrape while a job runs on 2 workers: 2 workers up, 4 subtasks placed,
    per-subtask records labelled with their worker, counts never above the input."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, seed=4)
    port = _free_port()
    proc = _run_on_two_workers(tmp_path, 4, f"--metrics-port={port}", {"WF_THROTTLE_US": "100"})
    seen: list[dict[str, list[tuple[dict[str, str], float]]]] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                metrics = _scrape(port)
            except OSError:
                time.sleep(0.2)
                continue
            if metrics.get("weirflow_records_in_total"):
                seen.append(metrics)
            time.sleep(0.3)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert committed_results(log_dir) == expected
    complete = 0
    for metrics in seen:
        up = metrics["weirflow_worker_up"]
        assert len(up) == 2 and all(value == 1 for _, value in up)
        assert sum(value for _, value in metrics["weirflow_worker_subtasks"]) == 4
        read = [
            (labels, value)
            for labels, value in metrics["weirflow_records_in_total"]
            if labels["operator"] == "events"
        ]
        assert sum(value for _, value in read) <= N
        reporting = {labels["worker"] for labels, _ in read}
        assert reporting <= {labels["worker"] for labels, _ in up}
        if len(reporting) == 2:  # each worker's first heartbeat has arrived
            complete += 1
            assert sorted(labels["subtask"] for labels, _ in read) == ["0", "1", "2", "3"]
            per_worker = {
                w: sorted(labels["subtask"] for labels, _ in read if labels["worker"] == w)
                for w in reporting
            }
            assert sorted(map(len, per_worker.values())) == [2, 2], per_worker
    assert complete >= 2, "the job ended before two scrapes with samples of both workers"


def _workers(port: int, token: str | None) -> list[dict[str, object]]:
    query = f"?token={token}" if token else ""
    url = f"http://127.0.0.1:{port}/api/workers{query}"
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def test_dashboard_and_status_list_every_worker_where_it_runs(tmp_path: Path) -> None:
    """Scenario: the dashboard of a job on 2 worker processes (``--ui-port``, with a token):
    ``/api/workers`` lists both, each placed on this host, together hosting every subtask;
    without the token the API refuses; ``weirflow status JOB`` (through the job's control
    endpoint) lists the same workers."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, 10_000, seed=5)
    port = _free_port()
    proc = _run_on_two_workers(
        tmp_path, 2, f"--ui-port={port}", {"WF_THROTTLE_US": "300", "WEIRFLOW_UI_TOKEN": "t0k"}
    )
    deployed: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not deployed:
            try:
                rows = _workers(port, "t0k")
            except OSError:
                time.sleep(0.2)
                continue
            if len(rows) == 2 and all(r["state"] == "deployed" for r in rows):
                deployed = rows
            time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as refused:
            _workers(port, None)
        status = subprocess.run(
            [sys.executable, "-m", "weirflow.cli", "status", "windowed_sum",
             f"--checkpoint-dir={tmp_path / 'chk'}"],
            env=dict(os.environ, COLUMNS="200"), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert committed_results(log_dir) == expected
    assert refused.value.code == 401
    assert len(deployed) == 2, deployed
    assert all(r["placed_on"] == r["host"] == socket.gethostname() for r in deployed), deployed
    assert sorted(s for r in deployed for s in r["subtasks"]) == [0, 1]  # type: ignore[attr-defined]
    assert status.returncode == 0, status.stderr
    assert "job windowed_sum (parallelism 2)" in status.stdout, status.stdout
    assert all(str(r["worker"]) in status.stdout for r in deployed), status.stdout
