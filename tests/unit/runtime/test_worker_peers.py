"""A worker's data connections to its peers when an attempt cannot connect them all."""

from __future__ import annotations

import socket
import threading

import pytest

from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.runtime import control, worker
from weirflow.runtime.dataplane import DataPlane, PeerLink
from weirflow.runtime.wire import ConnectionClosedError, FramedConnection, new_secret


def _no_jobs(job: str) -> LogicalGraph:
    raise ConfigError(f"no job {job} in this test")


def _deploy(peers: dict[str, str], attempt: int = 1) -> control.Deploy:
    return control.Deploy(
        attempt=attempt,
        job="job.py",
        parallelism=1,
        max_parallelism=8,
        subtasks=[0],
        owners={0: "m"},
        peers=peers,
        checkpoint_dir=None,
        mode="at_least_once",
        restore=None,
    )


def test_links_already_opened_are_closed_when_a_peer_never_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scenario: worker m dials worker z, then waits for worker a, which never connects;
    the attempt fails, and the connection to z is closed rather than left open with its
    reader thread (an attempt that fails this way on every restart would leak both)."""
    monkeypatch.setattr(worker, "_PEER_WAIT_S", 0.5)
    secret = new_secret()
    m = worker.Worker("127.0.0.1:1", secret, 1, _no_jobs)
    z = worker.Worker("127.0.0.1:1", secret, 1, _no_jobs)
    m.worker_id, z.worker_id = "m", "z"
    deploy = _deploy({"a": "127.0.0.1:1", "m": m.data_address, "z": z.data_address})
    with pytest.raises(ConnectionClosedError, match="no data connection from worker"):
        m.connect_peers(deploy)
    attempt, peer, conn = z._incoming.get(timeout=10)
    assert (attempt, peer) == (1, "m")
    conn.sock.settimeout(10)
    assert conn.sock.recv(1) == b"", "worker m left its connection to z open"
    conn.close()


def test_a_later_attempts_early_connection_is_kept_for_that_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scenario: while worker m still ran attempt 0, worker a already connected for attempts
    1 and 2 (attempt 1 was cancelled at once); m's attempt 1 takes its link, and attempt 2
    must find the other connection rather than wait for one that was dropped."""
    monkeypatch.setattr(worker, "_PEER_WAIT_S", 0.5)
    secret = new_secret()
    m = worker.Worker("127.0.0.1:1", secret, 1, _no_jobs)
    m.worker_id = "m"
    ends = []
    for attempt in (2, 1):
        ours, theirs = socket.socketpair()
        ends.append(theirs)
        m._incoming.put((attempt, "a", FramedConnection(ours, "worker a")))
    peers = {"a": "127.0.0.1:1", "m": m.data_address}
    # Attempt 0 met both connections early and parked them.
    with pytest.raises(ConnectionClosedError):
        m.connect_peers(_deploy(peers, 0))
    first = m.connect_peers(_deploy(peers, 1))
    second = m.connect_peers(_deploy(peers, 2))
    assert set(first) == set(second) == {"a"}
    for links in (first, second):
        links["a"].close()
    for end in ends:
        end.close()


def test_losing_the_coordinator_unblocks_a_send_to_a_peer_that_stopped_reading() -> None:
    """Scenario: the scheduler is stuck sending to a paused peer when the coordinator's
    connection ends (it gave this worker up); the data links are closed at once, so the
    scheduler wakes, drops its tasks and the worker can register again."""
    secret = new_secret()
    w = worker.Worker("127.0.0.1:1", secret, 1, _no_jobs)
    ours, peer_end = socket.socketpair()
    link = PeerLink(FramedConnection(ours, "worker p"), "p")
    w._plane = DataPlane({"p": link})
    send_failed = threading.Event()

    def flood() -> None:
        try:
            while True:
                link.conn.send(b"x" * 1_000_000)
        except ConnectionClosedError:
            send_failed.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    # The peer reads nothing: the sender blocks in sendall, holding the send lock.
    while link.conn._send_lock.acquire(timeout=0.5):
        link.conn._send_lock.release()
    control_ours, coordinator_end = socket.socketpair()
    session = worker.CoordinatorSession(w, FramedConnection(control_ours, "coordinator"))
    reader = threading.Thread(target=session._read, daemon=True)
    reader.start()
    coordinator_end.close()
    sender.join(10)
    assert send_failed.is_set(), "the scheduler stayed blocked after the coordinator was lost"
    assert isinstance(session.inbox.get(timeout=10), worker.Lost)
    peer_end.close()
