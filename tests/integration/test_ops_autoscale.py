"""`weirflow run --autoscale`: lag scales the job up, an empty backlog scales it down again,
each time from a final checkpoint, and the output stays exact."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import RUNNING_COUNTS, run_job, stop
from scraping import free_port, scrape, total

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


def decisions(log_file: Path) -> list[dict[str, Any]]:
    lines = log_file.read_text().splitlines() if log_file.exists() else []
    records = [json.loads(x) for x in lines if x.startswith("{")]
    return [r for r in records if r.get("logger") == "weirflow.autoscale"]


@pytest.mark.slow
@pytest.mark.parametrize("where", [[], ["--workers=2"]], ids=["one-process", "workers"])
def test_lag_scales_up_an_empty_backlog_scales_down_and_output_is_exact(
    tmp_path: Path, where: list[str]
) -> None:
    """Scenario: a burst of 2000 records far outruns the job; then nothing; it catches up.

    In one process the worker decides and its supervisor restores; on worker
    processes the coordinator decides on the heartbeats' split lag and runs the
    job again on the workers the new parallelism needs.
    """
    log_dir, chk, log_file = tmp_path / "log", tmp_path / "chk", tmp_path / "run.log"
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("counts", 2)
    port = free_port()
    proc = run_job(
        log_dir,
        chk,
        "--autoscale=min=1,max=2,target-lag=500ms,cooldown=1s,sustain=1s",
        "--checkpoint-interval=100ms",
        f"--metrics-port={port}",
        "--log-format=json",
        *where,
        job=RUNNING_COUNTS,
        parallelism=1,
        sleep_us=2000,
        stderr=open(log_file, "wb"),  # noqa: SIM115
    )
    sent: Counter[str] = Counter()

    def produce() -> None:
        # a burst: far more than the job reads in the time it takes to decide
        with EventLog(log_dir) as lg:
            for _ in range(5):
                batch = [f"u{i % USERS}" for i in range(400)]
                lg.append(
                    "events",
                    [Record(json.dumps({"user": u}).encode(), key=u.encode()) for u in batch],
                )
                sent.update(batch)
                time.sleep(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        deadline = time.monotonic() + 90
        while len(decisions(log_file)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        producer.join()
        expected = Counter(
            json.dumps([u, k]) for u, n in sent.items() for k in range(1, n + 1)
        )
        while sum(counts(log_dir).values()) < sum(expected.values()) or "starting from" not in (
            log_file.read_text().rsplit("autoscale down", 1)[-1]
        ):
            assert time.monotonic() < deadline, "the job did not catch up"
            time.sleep(0.1)
        metrics = None
        while metrics is None:
            assert time.monotonic() < deadline, "no metrics from the last worker"
            metrics = scrape(port)
    finally:
        stop(proc)
    assert proc.returncode == 0, log_file.read_text()[-3000:]
    made = [(d["direction"], d["parallelism"], d["target"]) for d in decisions(log_file)]
    assert made == [("up", 1, 2), ("down", 2, 1)]
    assert total(metrics, "weirflow_autoscale_decisions_total", direction="up") == 1
    assert total(metrics, "weirflow_autoscale_decisions_total", direction="down") == 1
    assert counts(log_dir) == expected
