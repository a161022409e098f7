"""`weirflow run --autoscale`: lag scales the job up, an empty backlog scales it down again,
each time from a final checkpoint, and the output stays exact."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import RUNNING_COUNTS, run_job, stop
from scraping import free_port, scrape, total

sys.path.insert(0, str(Path(__file__).parents[1]))
from standalone_cluster import standalone_cluster
from weirflow.eventlog import EventLog, Record

USERS = 10


def counts(log_dir: Path) -> Counter[str]:
    out: Counter[str] = Counter()
    with EventLog(log_dir) as lg:
        for p in range(lg.partition_count("counts")):
            pos = 0
            while batch := lg.read("counts", p, pos):
                out.update(r.value.decode() for r in batch)  # type: ignore[union-attr]
                pos = batch[-1].offset + 1
    return out


def burst(log_dir: Path, sent: Counter[str]) -> None:
    """Append 2000 events in five quick batches: far more than the job reads in the time
    it takes to decide; count them in ``sent``."""
    with EventLog(log_dir) as lg:
        for _ in range(5):
            batch = [f"u{i % USERS}" for i in range(400)]
            lg.append(
                "events",
                [Record(json.dumps({"user": u}).encode(), key=u.encode()) for u in batch],
            )
            sent.update(batch)
            time.sleep(0.1)


def start_autoscaled(log_dir: Path, chk: Path, log_file: Path, *args: str) -> Any:
    """Start the running-counts job at parallelism 1, 2 ms per record, autoscaled between 1
    and 2 on a 500 ms catch-up time with 1 s cool-down and sustain; stderr to ``log_file``."""
    return run_job(
        log_dir,
        chk,
        "--autoscale=min=1,max=2,target-lag=500ms,cooldown=1s,sustain=1s",
        "--checkpoint-interval=100ms",
        *args,
        job=RUNNING_COUNTS,
        parallelism=1,
        sleep_us=2000,
        stderr=open(log_file, "wb"),
    )


def running_counts(sent: Counter[str]) -> Counter[str]:
    """The job's exact output for the events ``sent``."""
    return Counter(json.dumps([u, k]) for u, n in sent.items() for k in range(1, n + 1))


_DECISION = re.compile(r"autoscale (up|down): parallelism (\d+) -> (\d+)")


def decisions(log_file: Path) -> list[tuple[str, int, int]]:
    """The autoscale decisions logged in ``log_file`` (JSON or text lines), in order."""
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    return [(m[1], int(m[2]), int(m[3])) for m in _DECISION.finditer(text)]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["one-process", "workers", "coordinator"])
def test_lag_scales_up_an_empty_backlog_scales_down_and_output_is_exact(
    tmp_path: Path, where: str
) -> None:
    """Scenario: a burst of 2000 records far outruns the job; then nothing; it catches up.

    In one process the worker decides and its supervisor restores; on worker
    processes the coordinator decides on the heartbeats' split lag and runs the
    job again on the workers the new parallelism needs; submitted to a standalone
    `weirflow coordinator` with two one-slot workers, that coordinator decides and
    runs the job again on its workers' slots.
    """
    log_dir, chk, log_file = tmp_path / "log", tmp_path / "chk", tmp_path / "run.log"
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("counts", 2)
    port = free_port()
    with contextlib.ExitStack() as stack:
        cluster = (
            stack.enter_context(
                standalone_cluster(
                    tmp_path,
                    dict(os.environ, WF_LOG_DIR=str(log_dir), WF_SLEEP_US="2000"),
                    2,
                    1,
                    f"--metrics-port={port}",
                )
            )
            if where == "coordinator"
            else None
        )
        decided = cluster.log if cluster is not None else log_file
        # the client logs each run's start ("attempt 1 starting from ..."): three runs
        runs = 3 if cluster is not None else 1
        place = {"one-process": [], "workers": ["--workers=2"]}.get(where, [])
        metrics_port = [] if cluster is not None else [f"--metrics-port={port}"]
        proc = start_autoscaled(
            log_dir,
            chk,
            log_file,
            *metrics_port,
            "--log-format=json",
            *(cluster.join if cluster is not None else place),
        )
        made, metrics, expected = _burst_then_idle(log_dir, log_file, decided, runs, port, proc)
    assert proc.returncode == 0, log_file.read_text()[-3000:]
    assert made == [("up", 1, 2), ("down", 2, 1)]
    assert total(metrics, "weirflow_autoscale_decisions_total", direction="up") == 1
    assert total(metrics, "weirflow_autoscale_decisions_total", direction="down") == 1
    assert counts(log_dir) == expected


def _burst_then_idle(
    log_dir: Path, log_file: Path, decided: Path, runs: int, port: int, proc: Any
) -> tuple[list[tuple[str, int, int]], Any, Counter[str]]:
    """Send the burst, wait for two decisions, the whole output and the last run's start,
    scrape the metrics, stop the job; return the decisions, the metrics and the output
    expected."""
    sent: Counter[str] = Counter()
    producer = threading.Thread(target=burst, args=(log_dir, sent), daemon=True)
    try:
        producer.start()
        deadline = time.monotonic() + 90
        while len(decisions(decided)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        producer.join()
        expected = running_counts(sent)

        def last_run_started() -> bool:
            text = log_file.read_text()
            if runs > 1:
                return text.count("starting from") >= runs
            return "starting from" in text.rsplit("autoscale down", 1)[-1]

        while sum(counts(log_dir).values()) < sum(expected.values()) or not last_run_started():
            assert time.monotonic() < deadline, "the job did not catch up"
            time.sleep(0.1)
        metrics = None
        while metrics is None:
            assert time.monotonic() < deadline, "no metrics from the last worker"
            metrics = scrape(port)
    finally:
        stop(proc)
    return decisions(decided), metrics, expected


@pytest.mark.slow
def test_a_coordinator_without_free_slots_skips_the_scale_up_and_runs_on(tmp_path: Path) -> None:
    """Scenario: a job submitted to a `weirflow coordinator` whose only worker has one slot
    falls behind; a run at parallelism 2 could never be placed, so the coordinator logs the
    scale-up as skipped, and the job runs on at parallelism 1 to the exact output."""
    log_dir, chk, log_file = tmp_path / "log", tmp_path / "chk", tmp_path / "run.log"
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("counts", 2)
    env = dict(os.environ, WF_LOG_DIR=str(log_dir), WF_SLEEP_US="2000")
    with standalone_cluster(tmp_path, env, 1, 1, "--worker-wait=5s") as cluster:
        proc = start_autoscaled(log_dir, chk, log_file, *cluster.join)
        sent: Counter[str] = Counter()
        try:
            burst(log_dir, sent)
            deadline = time.monotonic() + 90
            while "autoscale up skipped" not in cluster.text() or sum(
                counts(log_dir).values()
            ) < sum(sent.values()):
                assert proc.poll() is None, log_file.read_text()[-3000:]
                assert time.monotonic() < deadline, cluster.text()[-3000:]
                time.sleep(0.1)
        finally:
            stop(proc)
        logged = cluster.text()
    assert proc.returncode == 0, log_file.read_text()[-3000:]
    assert "the workers offer 1 slots" in logged
    assert decisions(cluster.log) == []
    assert log_file.read_text().count("starting from") == 1
    assert counts(log_dir) == running_counts(sent)
