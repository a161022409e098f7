"""The operations tests' jobs (``jobs/``): their topics, their ``weirflow run``, its stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from weirflow.eventlog import EventLog

JOB = str(Path(__file__).parent / "jobs" / "ops_pipeline.py")
NAME = "ops_pipeline"
RUNNING_COUNTS = str(Path(__file__).parent / "jobs" / "running_counts.py")


def create_topics(log_dir: Path) -> None:
    """``events`` (3 partitions) in, ``results`` (2) and ``dead`` (1) out."""
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("results", 2)
        lg.create_topic("dead", 1)


def run_job(
    log_dir: Path,
    chk: Path,
    *args: str,
    job: str = JOB,
    parallelism: int = 2,
    sleep_us: int = 0,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen[str]:
    """Start ``weirflow run`` of ``job``, by default at parallelism 2 (at 1 the whole job is
    one chain, with no channel for records and barriers to queue in)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            job,
            f"--parallelism={parallelism}",
            f"--checkpoint-dir={chk}",
            *args,
        ],
        env=dict(os.environ, WF_LOG_DIR=str(log_dir), WF_SLEEP_US=str(sleep_us)),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def stop(proc: subprocess.Popen[str], timeout_s: float = 60) -> None:
    """SIGTERM a running ``weirflow run`` (a final checkpoint) and wait; kill it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
