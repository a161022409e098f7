"""The file sink behind the shared guard: a folder that turns read-only and back.

The folder is made read-only with a read-only bind mount (root and mount(8)
needed), which refuses new files and renames even to root, as a network
share that drops would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[3]))

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
        subprocess.run(["umount", str(out)], check=False)


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
