"""Closing a job coordinator frees its listening port and its threads."""

from __future__ import annotations

import socket
import threading

import pytest

from weirflow.runtime.coordinator import JobCoordinator
from weirflow.runtime.wire import new_secret, parse_address


def test_a_closed_coordinator_accepts_no_more_connections() -> None:
    """Scenario: a program runs several jobs on workers (``Dataflow.run(workers=2)``), each
    under its own coordinator; a closed one must stop listening and end its accept thread,
    or every run leaves a thread blocked in accept and a port that still takes connections."""
    before = {t for t in threading.enumerate() if t.name == "weirflow-accept"}
    coordinator = JobCoordinator(new_secret())
    coordinator.start()
    coordinator.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(parse_address(coordinator.address), timeout=5).close()
    for thread in {t for t in threading.enumerate() if t.name == "weirflow-accept"} - before:
        thread.join(10)
        assert not thread.is_alive()
