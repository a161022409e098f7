"""Test helper: run a job on an unbounded source until a condition holds, then stop it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from weirflow import CheckpointConfig, Dataflow


def run_until(
    flow: Dataflow,
    chk: Path,
    restore: str | None,
    done: Callable[[], bool],
    *,
    every_s: float = 0.05,
    interval: timedelta = timedelta(milliseconds=100),
) -> None:
    """Run ``flow`` at parallelism 2 with checkpoints in ``chk`` until ``done()`` is true
    (polled every ``every_s`` seconds from a thread), then stop it with a final checkpoint.

    Args:
        flow: the job; its sources are unbounded, so that a restored run reads what was
            appended since the last one.
        chk: the checkpoint folder.
        restore: ``None`` for a fresh start, else what ``flow.run(restore=...)`` takes.
        done: the condition (it reads the job's output).
        every_s: seconds between two polls of ``done``.
        interval: the checkpoint interval.
    """
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            if done():
                stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        flow.run(
            2,
            checkpoint=CheckpointConfig(storage=str(chk), interval=interval),
            restore=restore,
            stop=stop,
        )
    finally:
        stop.set()
        watcher.join()
