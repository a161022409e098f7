"""`weirflow run --alert ... --alert-webhook URL`: one message per state change, posted to
a loopback server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import create_topics, run_job

sys.path.insert(0, str(Path(__file__).parents[1]))
from standalone_cluster import standalone_cluster
from weirflow.eventlog import EventLog, Record


class Webhook:
    """A loopback HTTP server keeping every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, done: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_alerting(
    tmp_path: Path, hook: Webhook, *args: str, sleep_us: int = 0
) -> tuple[Path, Path, subprocess.Popen[str]]:
    """Create the topics and start the job with ``args``, posting to ``hook`` every 200 ms,
    logging JSON to a pipe; return the log folder, the checkpoint folder and the process."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    create_topics(log_dir)
    proc = run_job(
        log_dir,
        chk,
        "--checkpoint-interval=200ms",
        *args,
        f"--alert-webhook={hook.url}",
        "--alert-every=200ms",
        "--log-format=json",
        sleep_us=sleep_us,
        stderr=subprocess.PIPE,
    )
    return log_dir, chk, proc


def logged_alerts(stderr: str) -> list[tuple[str, str]]:
    """``(alert, state)`` of every alert the job logged."""
    logged = [json.loads(line) for line in stderr.splitlines() if '"weirflow.alerts"' in line]
    return [(r["alert"], r["state"]) for r in logged]


def text_alerts(log: str) -> list[tuple[str, str]]:
    """``(alert, state)`` of every alert in a text log (a `weirflow coordinator`'s)."""
    return re.findall(r"weirflow\.alerts: alert (\S+) (firing|resolved) for job", log)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["worker", "coordinator"])
def test_lag_that_builds_and_drains_fires_then_resolves_once_each(
    tmp_path: Path, where: str
) -> None:
    """Scenario: a running job gets a burst it needs a few seconds for; then the input stops.
    The job runs in `weirflow run`'s worker process, which evaluates the alerts, or is
    submitted to a standalone `weirflow coordinator` with two workers, which evaluates them
    from the workers' heartbeats."""
    hook = Webhook()
    env = dict(os.environ, WF_LOG_DIR=str(tmp_path / "log"), WF_SLEEP_US="500")
    with contextlib.ExitStack() as stack:
        cluster = (
            stack.enter_context(standalone_cluster(tmp_path, env, workers=2))
            if where == "coordinator"
            else None
        )
        log_dir, chk, proc = start_alerting(
            tmp_path,
            hook,
            *(cluster.join if cluster is not None else []),
            "--alert=lag_records>1000",
            "--alert=dead_letters>0",
            sleep_us=500,
        )
        try:
            wait_for("the first checkpoint", lambda: list(chk.glob("ops_pipeline/chk-*/_manifest")))
            now = int(time.time() * 1000)
            with EventLog(log_dir) as lg:
                lg.append(
                    "events",
                    [
                        # a coordinator sees the lag once per heartbeat (1 s): a burst that
                        # lasts a few of them
                        Record(json.dumps({"user": f"u{i % 5}"}).encode(), timestamp_ms=now)
                        for i in range(12_000)
                    ],
                )
            wait_for("firing then resolved", lambda: len(hook.received) >= 2)
            # the lag stays drained: nothing more may arrive
            time.sleep(1)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            hook.close()
        logged = logged_alerts(stderr) if cluster is None else text_alerts(cluster.text())
    assert proc.returncode == 0, stderr
    assert [(m["alert"], m["state"]) for m in hook.received] == [
        ("lag_records>1000", "firing"),
        ("lag_records>1000", "resolved"),
    ]
    firing, resolved = hook.received
    assert firing["job"] == "ops_pipeline" and firing["signal"] == "lag_records"
    assert firing["value"] > 1000 >= resolved["value"]
    assert firing["at_ms"] < resolved["at_ms"]
    assert logged == [("lag_records>1000", "firing"), ("lag_records>1000", "resolved")]


@pytest.mark.slow
def test_dead_letters_on_workers_fire_once_from_the_coordinator(tmp_path: Path) -> None:
    """Scenario: a job on two worker processes reads a poison record, then another one.

    The workers' heartbeats carry the dead letters to the coordinator, which
    evaluates the conditions: one firing message for both letters, and none
    for the conditions that do not hold.
    """
    hook = Webhook()
    log_dir, chk, proc = start_alerting(
        tmp_path,
        hook,
        "--workers=2",
        "--alert=dead_letters>0",
        "--alert=restarts>0",
        "--alert=checkpoint_age>1m",
    )
    try:
        wait_for("the first checkpoint", lambda: list(chk.glob("ops_pipeline/chk-*/_manifest")))
        assert hook.received == []
        now = int(time.time() * 1000)
        good = [Record(json.dumps({"user": f"u{i}"}).encode(), timestamp_ms=now) for i in range(20)]
        with EventLog(log_dir) as lg:
            lg.append("events", [*good, Record(b"not json", timestamp_ms=now)])
        wait_for("the alert", lambda: len(hook.received) >= 1)
        with EventLog(log_dir) as lg:
            lg.append("events", [Record(b"still not json", timestamp_ms=now)])
            wait_for("the second dead letter", lambda: lg.end_offset("dead", 0) >= 2)
        # at least two evaluations after the second letter reached the coordinator's view
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        hook.close()
    assert proc.returncode == 0, stderr
    assert [(m["alert"], m["state"]) for m in hook.received] == [("dead_letters>0", "firing")]
    assert hook.received[0]["job"] == "ops_pipeline"
    assert hook.received[0]["signal"] == "dead_letters"
    assert logged_alerts(stderr) == [("dead_letters>0", "firing")]
