"""The file sink behind the shared guard: a folder that turns read-only and back.

The folder is made read-only with a read-only bind mount (root and mount(8)
needed), which refuses new files and renames even to root, as a network
share that drops would.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2]))

from breakers import heal_once_open
from weirflow.connectors import CircuitBreaker, FileSink, Resilience
from weirflow.retry import RetryPolicy

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root and mount(8)"
)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["mount", "--bind", str(out), str(out)], check=True)
    try:
        yield out
    finally:
        # twice: an outage a failed test left mounted, then the bind mount
        for _ in range(2):
            subprocess.run(["umount", str(out)], check=False, capture_output=True)


def _remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode},bind", str(folder)], check=True)


def _committed(folder: Path) -> list[int]:
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.startswith("."):
            out += [json.loads(line) for line in (folder / name).read_text().splitlines()]
    return out


def _resilience() -> Resilience:
    return Resilience(
        retry=RetryPolicy(
            max_attempts=200,
            initial_backoff=timedelta(milliseconds=10),
            max_backoff=timedelta(milliseconds=50),
        ),
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout=timedelta(milliseconds=200)),
    )


def test_read_only_folder_opens_the_breaker_holds_the_writer_and_resumes(folder: Path) -> None:
    """Scenario: checkpoint 1 commits; the folder turns read-only while the next records
    arrive. The write waits (no error reaches the task) while the breaker opens; once the
    folder is writable again the writer goes on by itself and the output is exact."""
    writer = FileSink(folder, resilience=_resilience()).create_writer("j", "sink", 0, 1, None)
    writer.write(list(range(10)), None)
    writer.pre_commit(1)
    writer.commit(1)
    _remount(folder, "ro")
    healer, seen = heal_once_open(writer.connector_stats, lambda: _remount(folder, "rw"))
    writer.write(list(range(10, 20)), None)  # a new part file: blocked until writable
    healer.join()
    writer.pre_commit(2)
    writer.commit(2)
    writer.close()
    assert "open" in seen
    stats = writer.connector_stats()
    assert stats is not None
    assert stats.retries["FileSinkIOError"] >= 2 and sum(stats.retries.values()) >= 3
    assert stats.rows_written == 20
    assert stats.breaker == "closed"
    assert _committed(folder) == list(range(20))


def test_read_only_folder_at_commit_is_retried_and_the_commit_completes(folder: Path) -> None:
    """Scenario: the folder turns read-only between a checkpoint's pre-commit and its
    commit: the rename to the committed name waits and then happens once."""
    writer = FileSink(folder, resilience=_resilience()).create_writer("j", "sink", 0, 1, None)
    writer.write(list(range(5)), None)
    writer.pre_commit(1)
    _remount(folder, "ro")
    timer = threading.Timer(0.3, _remount, (folder, "rw"))
    timer.start()
    writer.commit(1)
    timer.join()
    stats = writer.connector_stats()
    assert stats is not None and sum(stats.retries.values()) >= 1
    assert _committed(folder) == list(range(5))


class _BreakerOpened(logging.Handler):
    """Sets ``opened`` when the guard logs a retry with its breaker open."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "breaker open" in record.getMessage():
            self.opened.set()


def test_a_job_rides_out_a_read_only_folder_without_a_restart(folder: Path) -> None:
    """Scenario: a running job's output folder becomes unusable after its first committed
    part file, until the sink's breaker has opened. The job is not restarted, and the
    committed output is every record once."""
    from weirflow import CheckpointConfig, Dataflow
    from weirflow.connectors import IterableSource

    n = 3000

    def paced(x: int) -> int:
        time.sleep(0.0005)  # keeps the job running while the folder is read-only
        return x

    flow = Dataflow("ro_folder")
    flow.source(IterableSource(list(range(n))), name="src").map(paced).sink(
        FileSink(folder, resilience=_resilience())
    )
    watcher = _BreakerOpened()
    logging.getLogger("weirflow.connectors.resilience").addHandler(watcher)

    done = threading.Event()

    def outage() -> None:
        while not any(not name.startswith(".") for name in os.listdir(folder)):
            if done.wait(0.01):
                return  # the job ended first: the assertions below say so
        # Remounting read-only is refused while a part file is open for writing, so the
        # outage hides the folder under an empty read-only file system instead (a network
        # share that dropped): new files and renames fail until it is unmounted.
        hide = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
        subprocess.run(hide, check=True)
        watcher.opened.wait(30)
        subprocess.run(["umount", str(folder)], check=True)

    chaos = threading.Thread(target=outage)
    chaos.start()
    try:
        result = flow.run(
            checkpoint=CheckpointConfig(
                storage=str(folder.parent / "chk"), interval=timedelta(milliseconds=100)
            )
        )
    finally:
        done.set()
        chaos.join()
        logging.getLogger("weirflow.connectors.resilience").removeHandler(watcher)
    assert watcher.opened.is_set()
    assert result.restarts == 0
    assert sorted(_committed(folder)) == list(range(n))
