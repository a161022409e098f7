"""The operations tests' job (``jobs/ops_pipeline.py``): its topics and its ``weirflow run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from weirflow.eventlog import EventLog

JOB = str(Path(__file__).parent / "jobs" / "ops_pipeline.py")
NAME = "ops_pipeline"


def create_topics(log_dir: Path) -> None:
    """``events`` (3 partitions) in, ``results`` (2) and ``dead`` (1) out."""
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("results", 2)
        lg.create_topic("dead", 1)


def run_job(
    log_dir: Path, chk: Path, *args: str, sleep_us: int = 0, stderr: IO[Any] | int | None = None
) -> subprocess.Popen[str]:
    """Start ``weirflow run`` of the job at parallelism 2 (at 1 the whole job is one chain,
    with no channel for records and barriers to queue in)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            JOB,
            "--parallelism=2",
            f"--checkpoint-dir={chk}",
            *args,
        ],
        env=dict(os.environ, WF_LOG_DIR=str(log_dir), WF_SLEEP_US=str(sleep_us)),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )
