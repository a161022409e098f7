"""Fixtures for event-log unit tests: a real log directory and a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from weirflow.eventlog import EventLog


class ManualClock:
    """A clock the test moves by hand; returns integer milliseconds."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def log(tmp_path: Path, clock: ManualClock) -> Iterator[EventLog]:
    with EventLog(tmp_path / "log", "process", clock=clock) as el:
        yield el
