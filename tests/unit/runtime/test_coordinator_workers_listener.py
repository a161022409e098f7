"""The coordinator's workers listener: told of a worker's join and loss, once per change."""

from __future__ import annotations

import contextlib
import threading
import time

from weirflow.api import load_graph
from weirflow.runtime.control import WorkerInfo
from weirflow.runtime.coordinator import JobCoordinator
from weirflow.runtime.wire import new_secret
from weirflow.runtime.worker import CoordinatorLostError, Worker


def test_listener_hears_each_join_and_loss_once() -> None:
    """Scenario: a worker placed by a launcher (a location) joins a coordinator and is
    given up; the listener hears the empty start, the join (with the location) and the
    loss, and nothing for events that change no worker (repeated drains)."""
    secret = new_secret()
    coordinator = JobCoordinator(secret, heartbeat_interval_s=0.2, heartbeat_timeout_s=5)
    heard: list[list[WorkerInfo]] = []
    coordinator.add_workers_listener(heard.append)
    coordinator.start()
    worker = Worker(
        coordinator.address, secret, 2, load_graph, "127.0.0.1", reconnect=False,
        location="ray node abc at 10.0.0.7",
    )  # fmt: skip

    def serve() -> None:
        # the worker ends by losing its coordinator (its connection closed below)
        with contextlib.suppress(CoordinatorLostError):
            worker.serve()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        _drain_until(coordinator, heard, 2)
        for _ in range(5):
            coordinator.drain_membership()
        assert heard[0] == []
        (joined,) = heard[1]
        assert (joined.location, joined.slots, joined.status) == (
            "ray node abc at 10.0.0.7",
            2,
            "idle",
        )
        assert len(heard) == 2
        # the worker's connection breaks: it is lost
        coordinator.workers[joined.worker_id].conn.close()
        _drain_until(coordinator, heard, 3)
        assert heard[2] == []
    finally:
        coordinator.close()
    thread.join(10)


def _drain_until(coordinator: JobCoordinator, heard: list[list[WorkerInfo]], n: int) -> None:
    """Apply membership events (as the coordinator's thread does) until ``n`` were heard."""
    deadline = time.monotonic() + 30
    while len(heard) < n:
        assert time.monotonic() < deadline, heard
        coordinator.drain_membership()
        time.sleep(0.05)
