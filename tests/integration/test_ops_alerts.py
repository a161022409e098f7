"""`weirflow ops alerts`: valid for promtool, each alert documented, each fires on a real job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from ops_helpers import NAME, create_topics, run_job, stop
from promtool_helpers import PROMTOOL, input_series, promtool_test
from scraping import Samples, free_port, scrape, total

from weirflow.eventlog import EventLog, Record
from weirflow.testing import children

# CI installs promtool (.ci/run); elsewhere these tests need Debian's prometheus package
pytestmark = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="needs promtool (Debian: prometheus)"
)

ROOT = Path(__file__).resolve().parents[2]


def ops_alerts(tmp_path: Path, *args: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "weirflow.cli", "ops", "alerts", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path / "weirflow-alerts.yml"
    path.write_text(done.stdout)
    return path


def test_rules_pass_promtool_and_each_alert_has_a_runbook_section(tmp_path: Path) -> None:
    rules_file = ops_alerts(tmp_path, "--job", 'a "quoted" job')
    check = subprocess.run(
        [PROMTOOL or "promtool", "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rules = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    headings = {m.group(1).strip().lower() for m in re.finditer(r"^## (\w+)\s*$", runbooks, re.M)}
    assert {a["alert"].lower() for a in alerts} == headings
    for a in alerts:
        assert a["annotations"]["runbook_url"] == f"docs/runbooks.md#{a['alert'].lower()}"
        assert a["labels"]["severity"] in ("page", "ticket")
    # every selector is restricted to the job
    for r in rules:
        for metric in re.findall(r"\b(weirflow_[a-z_]+)\b(?!\s*[,)])", r["expr"]):
            assert f'{metric}{{job="a \\"quoted\\" job"}}' in r["expr"], (metric, r["expr"])


class Producer(threading.Thread):
    """Appends events stamped with the wall clock; partition 2 only gets the first batch,
    so the job's watermark stalls there while records keep arriving on 0 and 1."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(daemon=True)
        self.log_dir = log_dir
        self.stop = threading.Event()
        self.appended = 0

    def run(self) -> None:
        with EventLog(self.log_dir) as lg:
            first = True
            while not self.stop.wait(0.05):
                now = int(time.time() * 1000)
                parts = (0, 1, 2) if first else (0, 1)
                batch = [
                    Record(
                        json.dumps({"user": f"u{i % 7}"}).encode(), timestamp_ms=now, partition=p
                    )
                    for p in parts
                    for i in range(60)
                ]
                if first:
                    batch.append(Record(b"{not json", timestamp_ms=now, partition=0))
                    first = False
                lg.append("events", batch)
                self.appended += len(batch)


@pytest.mark.slow
def test_every_alert_fires_on_a_real_job(tmp_path: Path) -> None:
    """Scenario: a job slower than its input with a poison record and an idle partition, then
    a checkpoint folder that cannot be written, then a SIGKILL; the scrapes go to promtool."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    create_topics(log_dir)
    rules_file = ops_alerts(
        tmp_path,
        "--lag-records=300",
        "--lag=1s",
        "--latency=1ms",
        "--checkpoint-interval=100ms",
        "--checkpoint-timeout=1ms",
        "--restart-window=60m",
        # the job publishes a sample per scheduler round, about one a second here (a batch
        # of records at 2 ms each) and several seconds on a loaded machine (a window of
        # thirty scrapes, 6 s, once held no new latency sample while the test suite, a
        # benchmark and Ray tests shared the 2 cores): sixty scrapes (12 s) hold a change
        "--window=60m",
    )
    port = free_port()
    proc = run_job(
        log_dir,
        chk,
        "--checkpoint-interval=100ms",
        "--restart-delay=100ms",
        f"--metrics-port={port}",
        sleep_us=2000,
        stderr=open(tmp_path / "run.log", "wb"),  # noqa: SIM115
    )
    producer = Producer(log_dir)
    scrapes: list[Samples | None] = []

    def until(what: str, done: Callable[[Samples], bool], at_least: int = 0) -> int:
        """Samples every 200 ms until ``done`` holds for ``at_least + 1`` scrapes in a row."""
        deadline = time.monotonic() + 60
        streak = 0
        while time.monotonic() < deadline:
            s = scrape(port)
            scrapes.append(s)
            streak = streak + 1 if s is not None and done(s) else 0
            if streak > at_least:
                return len(scrapes) - 1
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    job_dir = chk / NAME
    try:
        producer.start()
        letters = until(
            "a dead letter",
            lambda s: total(s, "weirflow_dead_letters_by_error_total") > 0,
        )
        # the rules' window (sixty scrapes) then their `for: 5m` (five more), and a margin
        behind = until(
            "lag above 300 records and growing",
            lambda s: total(s, "weirflow_source_split_lag_records") > 300,
            at_least=70,
        )
        away = chk / f"{NAME}.away"
        job_dir.rename(away)
        job_dir.write_text("a file where the checkpoint folder was")
        blocked = until(
            "a failed checkpoint and an old last one",
            lambda s: (
                total(s, "weirflow_checkpoints_failed_total") > 0
                and total(s, "weirflow_checkpoint_last_completed_age_seconds") > 0.3
            ),
        )
        job_dir.unlink()
        away.rename(job_dir)
        # the worker may be restarting already (too many failed checkpoints in a row)
        deadline = time.monotonic() + 60
        while len(workers := children(proc.pid)) != 1:
            assert time.monotonic() < deadline, "no worker to kill"
            time.sleep(0.05)
        os.kill(workers[0], signal.SIGKILL)
        restarted = until("a restart", lambda s: total(s, "weirflow_restarts_total") >= 1)
    finally:
        producer.stop.set()
        producer.join()
        stop(proc)

    job = {"job": NAME}
    checks = [
        (
            letters,
            "WeirflowDeadLetters",
            [{**job, "operator": "events", "error_type": _json_error()}],
        ),
        *(
            (behind, name, [job])
            for name in (
                "WeirflowSourceLagRecords",
                "WeirflowSourceLagSeconds",
                "WeirflowSourceLagGrowing",
                "WeirflowProcessingBehindIngestion",
                "WeirflowEndToEndLatencyHigh",
                "WeirflowWatermarkStalled",
            )
        ),
        (blocked, "WeirflowCheckpointFailures", [job]),
        (blocked, "WeirflowCheckpointsStalled", [job]),
        # checkpoints wait behind the queued records: seconds against a 1 ms "timeout"
        (blocked, "WeirflowCheckpointDurationNearTimeout", [job]),
        (restarted, "WeirflowRestarts", [job]),
    ]
    done = promtool_test(tmp_path, rules_file, input_series(scrapes), checks)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("alert", "series", "checks"),
    [
        (
            # no sink exports its breaker's state yet
            "WeirflowCircuitBreakerOpen",
            {'weirflow_circuit_breaker_state{job="j",connector="pg"}': "0 0 1 1 0"},
            [(1, []), (2, [{"job": "j", "connector": "pg"}]), (4, [])],
        ),
        (
            # checkpoints triggered from the start, none ever completed
            "WeirflowCheckpointsStalled",
            {
                'weirflow_checkpoints_triggered_total{job="j"}': "0 1 2 3 4 5",
                'weirflow_checkpoints_completed_total{job="j"}': "0 0 0 0 0 0",
                'weirflow_checkpoint_last_completed_age_seconds{job="j"}': "0 0 0 0 0 0",
            },
            [(2, []), (4, [{"job": "j"}])],
        ),
    ],
)
def test_alerts_on_synthetic_series(
    tmp_path: Path, alert: str, series: dict[str, str], checks: list[tuple[int, list]]
) -> None:
    """Conditions no real job here drives: the series are written by hand."""
    rules_file = ops_alerts(tmp_path, "--checkpoint-interval=1m")
    inputs = [{"series": k, "values": v} for k, v in series.items()]
    for step, firing in checks:
        done = promtool_test(tmp_path, rules_file, inputs, [(step, alert, firing)])
        assert done.returncode == 0, done.stdout + done.stderr


def _json_error() -> str:
    try:
        json.loads(b"{not json")
    except ValueError as e:
        return f"{type(e).__module__}.{type(e).__qualname__}"
    raise AssertionError("unreachable")
