"""A worker process: hosts subtasks of a job for the coordinator that deploys them.

The worker's main loop knows nothing of who started it (local launcher,
``weirflow worker`` on a host, Ray): it connects to the coordinator,
registers its slots, and then serves deployments:

1. :class:`~weirflow.runtime.control.Deploy` of attempt ``a``: load the job,
   build the subtasks it names (restored from the checkpoint it names),
   connect the data plane to every peer of attempt ``a``, report
   :class:`~weirflow.runtime.control.Running`;
2. step the tasks on the local scheduler; once per round deliver network
   input, handle control messages of attempt ``a`` (trigger a checkpoint,
   checkpoint complete → sinks commit, finish, cancel), and snapshot tasks
   that already finished;
3. the attempt ends by ``Finish`` (counts reported), ``Cancel``, or a task
   failure (reported as ``Failed``); the worker then waits for the next
   deployment.

Messages of any other attempt are dropped (fencing). If the coordinator
falls silent for the heartbeat timeout, or its connection breaks, the worker
drops its tasks at once — so a worker cut off by the network or paused
(a zombie) commits nothing more — and dials the coordinator again as a new
worker.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from weirflow.errors import WeirflowError
from weirflow.graph import LogicalGraph
from weirflow.runtime import control
from weirflow.runtime.dataplane import DataPlane, PeerLink
from weirflow.runtime.deployment import CoordinatorLostError, Deployment, Lost
from weirflow.runtime.task import TaskState
from weirflow.runtime.wire import (
    ConnectionClosedError,
    FramedConnection,
    PeerAuthenticationError,
    authenticate_listener,
    dial,
)

log = logging.getLogger("weirflow.worker")

_PEER_WAIT_S = 15.0
_HELLO = msgspec.msgpack.Encoder()
_ENDED = (TaskState.ENDING, TaskState.FINISHED)


class Worker:
    """One worker process's life: register, then serve deployments until shut down.

    Args:
        coordinator: ``HOST:PORT`` of the coordinator.
        secret: the job's secret (authenticates every connection).
        slots: subtask indices this worker can host, ≥ 1.
        load_graph: job spec (``JOB.py[:NAME]``) → its logical graph.
        host_address: the address this worker's data plane binds and announces.
        reconnect: dial the coordinator again after losing it (``False``: return).
        connect_timeout_s: how long the first connection is retried (s).
        location: where a launcher placed this worker (shown by ``weirflow status``).
    """

    def __init__(
        self,
        coordinator: str,
        secret: bytes,
        slots: int,
        load_graph: Callable[[str], LogicalGraph],
        host_address: str = "127.0.0.1",
        reconnect: bool = True,
        connect_timeout_s: float = 30.0,
        location: str = "",
    ) -> None:
        self.coordinator = coordinator
        self.secret = secret
        self.slots = slots
        self.load_graph = load_graph
        self.host_address = host_address
        self.reconnect = reconnect
        self.connect_timeout_s = connect_timeout_s
        self.location = location
        self.worker_id = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self._graphs: dict[str, LogicalGraph] = {}
        self._listener = socket.create_server((host_address, 0))
        self.data_address = f"{host_address}:{self._listener.getsockname()[1]}"
        self._incoming: queue.Queue[tuple[int, str, FramedConnection]] = queue.Queue()
        self._parked: list[tuple[int, str, FramedConnection]] = []
        self.attempt = 0
        self._plane: DataPlane | None = None
        threading.Thread(
            target=self._accept_peers, name="weirflow-data-accept", daemon=True
        ).start()

    # -- connections -------------------------------------------------------------

    def _accept_peers(self) -> None:
        while True:
            sock, addr = self._listener.accept()
            threading.Thread(
                target=self._admit_peer, args=(sock, addr), name="weirflow-data-admit", daemon=True
            ).start()

    def _admit_peer(self, sock: socket.socket, addr: Any) -> None:
        try:
            authenticate_listener(sock, self.secret)
            conn = FramedConnection(sock, f"peer at {addr}")
            attempt, peer = msgspec.msgpack.decode(conn.recv(), type=tuple[int, str])
        except (PeerAuthenticationError, OSError, WeirflowError, msgspec.DecodeError) as e:
            log.warning("refused a data connection from %s: %s", addr, e)
            sock.close()
            return
        self._incoming.put((attempt, peer, conn))

    def serve(self) -> int:
        """Register with the coordinator and serve it until it shuts this worker down.

        Returns:
            0 after a :class:`~weirflow.runtime.control.Shutdown`.

        Raises:
            OSError: the coordinator stayed unreachable for ``connect_timeout_s``
                (at the first connection).
            PeerAuthenticationError: the coordinator holds another secret.
            CoordinatorLostError: the coordinator was lost and ``reconnect`` is off.
        """
        first_deadline: float | None = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                conn = dial(self.coordinator, self.secret, f"coordinator {self.coordinator}")
            except OSError:
                # a worker may start before its coordinator: keep dialling for a while
                if first_deadline is not None and time.monotonic() > first_deadline:
                    raise
                if first_deadline is None and not self.reconnect:
                    raise
                time.sleep(0.5)
                continue
            first_deadline = None
            session = CoordinatorSession(self, conn)
            try:
                return session.run()
            except CoordinatorLostError as e:
                log.warning("worker %s lost the coordinator: %s", self.worker_id, e)
                conn.close()
                if not self.reconnect:
                    raise
                # A new identity: the coordinator gave the old one up, and must not
                # mistake this process for the worker it fenced.
                self.worker_id = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
                time.sleep(1.0)

    def graph(self, job: str) -> LogicalGraph:
        """The job's logical graph, loaded once per job spec."""
        if job not in self._graphs:
            self._graphs[job] = self.load_graph(job)
        return self._graphs[job]

    def connect_peers(self, deploy: control.Deploy) -> dict[str, PeerLink]:
        """Open one data connection to every other worker of the attempt.

        The worker with the smaller id dials; the other accepts. Connections
        for an older attempt are closed; a newer attempt's are kept for later.

        Raises:
            ConnectionClosedError: a peer did not connect within 15 s.
            OSError, PeerAuthenticationError: dialling a peer failed.
        """
        links: dict[str, PeerLink] = {}
        try:
            self._open_links(deploy, links)
        except BaseException:
            # The attempt fails; the links opened so far would keep their sockets and
            # reader threads until the peer hangs up.
            for link in links.values():
                link.close()
            raise
        return links

    def _open_links(self, deploy: control.Deploy, links: dict[str, PeerLink]) -> None:
        me = self.worker_id
        for peer, address in sorted(deploy.peers.items()):
            if peer > me:
                conn = dial(address, self.secret, f"worker {peer}")
                links[peer] = PeerLink(conn, peer)
                conn.send(_HELLO.encode((deploy.attempt, me)))
        expected = {p for p in deploy.peers if p < me}
        deadline = time.monotonic() + _PEER_WAIT_S
        waiting, self._parked = self._parked, []
        # Every parked connection is looked at (not only until the links are complete):
        # one of a later attempt must stay parked for that attempt.
        while waiting or expected - set(links):
            if waiting:
                attempt, peer, conn = waiting.pop()
            else:
                try:
                    attempt, peer, conn = self._incoming.get(
                        timeout=max(0.0, deadline - time.monotonic())
                    )
                except queue.Empty:
                    missing = ", ".join(sorted(expected - set(links)))
                    raise ConnectionClosedError(
                        f"attempt {deploy.attempt}: no data connection from worker(s) {missing} "
                        f"within {_PEER_WAIT_S:.0f} s"
                    ) from None
            if attempt == deploy.attempt and peer in expected and peer not in links:
                links[peer] = PeerLink(conn, peer)
            elif attempt > deploy.attempt:
                self._parked.append((attempt, peer, conn))
            else:
                conn.close()


class CoordinatorSession:
    """One connection to the coordinator: its reader and heartbeat threads, and the deployments."""

    def __init__(self, worker: Worker, conn: FramedConnection) -> None:
        self.worker = worker
        self.conn = conn
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.last_heard = time.monotonic()
        self.heartbeat_interval_s = 1.0
        self.heartbeat_timeout_s = 10.0
        self.deployment: Deployment | None = None
        self._closed = threading.Event()

    def send(self, message: control.Message) -> None:
        """Send a control message; a broken connection shows up on the reader side."""
        try:
            self.conn.send(control.encode_message(message))
        except ConnectionClosedError:
            self.inbox.put(Lost("sending to the coordinator failed"))

    def _read(self) -> None:
        try:
            while True:
                message = control.decode_message(self.conn.recv())
                self.last_heard = time.monotonic()
                if isinstance(message, control.Cancel) and self.worker.attempt == message.attempt:
                    self._close_plane()
                self.inbox.put(message)
        except (ConnectionClosedError, msgspec.DecodeError) as e:
            # The coordinator gave this worker up (or is gone): its tasks must stop now.
            self._close_plane()
            self.inbox.put(Lost(str(e)))

    def _close_plane(self) -> None:
        """Close the attempt's data links: unblocks a scheduler stuck sending to a dead peer."""
        plane = self.worker._plane
        if plane is not None:
            plane.close()

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat_interval_s):
            deployment = self.deployment
            if deployment is None:
                self.send(control.Heartbeat(self.worker.attempt))
                continue
            self.send(
                control.Heartbeat(
                    self.worker.attempt,
                    deployment.sample(),
                    deployment.connector_sample(),
                    deployment.split_lag,
                )
            )

    def check_coordinator(self) -> None:
        """Raise when the coordinator has been silent past the heartbeat timeout."""
        if time.monotonic() - self.last_heard > self.heartbeat_timeout_s:
            raise CoordinatorLostError(
                f"no message from the coordinator for {self.heartbeat_timeout_s:.1f} s"
            )

    def run(self) -> int:
        w = self.worker
        self.send(
            control.Register(
                w.worker_id,
                w.slots,
                socket.gethostname(),
                w.data_address,
                os.getpid(),
                w.location,
            )
        )
        threading.Thread(target=self._read, name="weirflow-control", daemon=True).start()
        try:
            while True:
                try:
                    message = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    self.check_coordinator()
                    continue
                if isinstance(message, Lost):
                    raise CoordinatorLostError(message.reason)
                if isinstance(message, control.Welcome):
                    self.heartbeat_interval_s = message.heartbeat_interval_ms / 1000
                    self.heartbeat_timeout_s = message.heartbeat_timeout_ms / 1000
                    threading.Thread(
                        target=self._beat, name="weirflow-heartbeat", daemon=True
                    ).start()
                elif isinstance(message, control.Shutdown):
                    return 0
                elif isinstance(message, control.Deploy):
                    self.deployment = Deployment(self, message)
                    try:
                        self.deployment.run()
                    finally:
                        self.deployment = None
        finally:
            self._closed.set()
