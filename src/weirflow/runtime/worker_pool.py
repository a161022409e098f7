"""The coordinator's workers: their control connections, heartbeats, joins and losses.

:class:`WorkerPool` listens for control connections and admits those that
authenticate with the job's secret: a worker's ``Register`` (then a thread
reads its messages into one event queue), a ``StatusRequest`` (answered
with :meth:`WorkerPool.status`) or a client's ``Submit`` (queued for the
service). Heartbeats go both ways; a worker silent past the timeout, or
whose connection ends, is reported lost. Joins and losses are applied on
the coordinator's thread (``_membership``), so ``workers``
changes on that thread only. :class:`~weirflow.runtime.coordinator.JobCoordinator`
extends the pool with the job's run.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import queue
import socket
import threading
import time
from typing import Any

import msgspec

from weirflow.errors import WeirflowError
from weirflow.runtime import control
from weirflow.runtime.attempt import AttemptFailedError
from weirflow.runtime.launcher import Launcher, LostProcess
from weirflow.runtime.membership import WorkerEntry, WorkerStatus
from weirflow.runtime.wire import (
    ConnectionClosedError,
    FramedConnection,
    PeerAuthenticationError,
    authenticate_listener,
    parse_address,
)

log = logging.getLogger("weirflow.coordinator")


class _Joined:
    def __init__(self, entry: WorkerEntry) -> None:
        self.entry = entry


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class WorkerPool(abc.ABC):
    """Registered workers and the connections to them (see the module docs).

    Args:
        secret: the job's secret; workers and clients must hold it.
        listen: ``HOST:PORT`` for worker connections (port 0: any free port).
        launcher: starts and replaces workers; ``None`` when they are started
            by hand (``weirflow worker``).
        heartbeat_interval_s: how often heartbeats go both ways (s).
        heartbeat_timeout_s: silence after which a worker is given up (s).

    Raises:
        OSError: ``listen`` cannot be bound.
    """

    def __init__(
        self,
        secret: bytes,
        listen: str,
        launcher: Launcher | None,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
    ) -> None:
        self.secret = secret
        self.launcher = launcher
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        host, port = parse_address(listen)
        self._server = socket.create_server((host, port))
        self.address = f"{host}:{self._server.getsockname()[1]}"
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.workers: dict[str, WorkerEntry] = {}
        # the current attempt: heartbeats carry it, and samples of other attempts are dropped
        self.attempt = 0
        self.submissions: queue.Queue[tuple[control.Submit, FramedConnection]] = queue.Queue()
        self._closed = threading.Event()

    @abc.abstractmethod
    def status(self) -> control.Status:
        """What ``weirflow status`` shows; the answer to a ``StatusRequest``."""

    def start(self) -> None:
        """Accept workers and clients, send heartbeats, and start the launcher's workers."""
        threading.Thread(target=self._accept, name="weirflow-accept", daemon=True).start()
        threading.Thread(target=self._heartbeats, name="weirflow-heartbeats", daemon=True).start()
        if self.launcher is not None:
            self.launcher.watch(self._launcher_lost)
            self.launcher.start(self.address)

    def _launcher_lost(self, lost: LostProcess) -> None:
        # the launcher knows the process, not the worker id: resolved on the coordinator's thread
        self.events.put(("", lost))

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, addr = self._server.accept()
            except OSError:
                return
            threading.Thread(
                target=self._admit, args=(sock, addr), name="weirflow-admit", daemon=True
            ).start()

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        try:
            authenticate_listener(sock, self.secret)
            conn = FramedConnection(sock, f"peer at {addr[0]}:{addr[1]}")
            first = control.decode_message(conn.recv())
        except (PeerAuthenticationError, OSError, WeirflowError, msgspec.DecodeError) as e:
            log.warning("refused a connection from %s:%s: %s", addr[0], addr[1], e)
            sock.close()
            return
        if isinstance(first, control.Register):
            self._serve_worker(first, conn)
        elif isinstance(first, control.StatusRequest):
            with contextlib.suppress(ConnectionClosedError):
                conn.send(control.encode_message(self.status()))
            conn.close()
        elif isinstance(first, control.Submit):
            self.submissions.put((first, conn))
        else:
            log.warning("refused a connection that opened with %s", type(first).__name__)
            conn.close()

    def _serve_worker(self, register: control.Register, conn: FramedConnection) -> None:
        entry = WorkerEntry(register, conn)
        entry.send(
            control.Welcome(
                int(self.heartbeat_interval_s * 1000), int(self.heartbeat_timeout_s * 1000)
            )
        )
        self.events.put((entry.id, _Joined(entry)))
        try:
            while True:
                message = control.decode_message(conn.recv())
                entry.last_heard = time.monotonic()
                if isinstance(message, control.Heartbeat):
                    # metrics only: read by the metrics collector, not by the run
                    if message.attempt == self.attempt and entry.status is WorkerStatus.DEPLOYED:
                        entry.sample = message.counts
                        entry.connectors = message.connectors
                        entry.split_lag = message.split_lag
                    continue
                self.events.put((entry.id, message))
        except (ConnectionClosedError, msgspec.DecodeError) as e:
            self.events.put((entry.id, _Lost(f"its connection ended ({e})")))

    def _heartbeats(self) -> None:
        while not self._closed.wait(self.heartbeat_interval_s):
            now = time.monotonic()
            for entry in list(self.workers.values()):
                if entry.status is WorkerStatus.LOST:
                    continue
                entry.send(control.Heartbeat(self.attempt))
                silent = now - entry.last_heard
                if silent > self.heartbeat_timeout_s:
                    self.events.put(
                        (
                            entry.id,
                            _Lost(
                                f"no heartbeat for {silent:.1f} s (timeout "
                                f"{self.heartbeat_timeout_s:.1f} s)"
                            ),
                        )
                    )

    def _membership(self, wid: str, event: Any) -> WorkerEntry | None:
        """Apply joins and losses; return the worker a message came from (``None``: unknown)."""
        if isinstance(event, _Joined):
            self.workers[event.entry.id] = event.entry
            log.info(
                "worker %s joined from %s%s with %d slot(s)",
                event.entry.id,
                event.entry.host,
                f" ({event.entry.location})" if event.entry.location else "",
                event.entry.slots,
            )
            return None
        if isinstance(event, LostProcess):
            entry = self._worker_of(event)
            if entry is not None:
                self._give_up(entry, event.reason)
            return None
        entry = self.workers.get(wid)
        if entry is None or entry.status is WorkerStatus.LOST:
            return None
        if isinstance(event, _Lost):
            self._give_up(entry, event.reason)
            return None
        return entry

    def _worker_of(self, lost: LostProcess) -> WorkerEntry | None:
        for entry in self.workers.values():
            if (
                entry.status is not WorkerStatus.LOST
                and entry.pid == lost.pid
                and parse_address(entry.data_address)[0] == lost.host
            ):
                return entry
        return None

    def _give_up(self, entry: WorkerEntry, reason: str) -> None:
        was = entry.status
        entry.move(WorkerStatus.LOST)
        entry.conn.close()
        log.warning("worker %s lost: %s", entry.id, reason)
        if self.launcher is not None:
            self.launcher.release(entry.pid)
        if was is WorkerStatus.DEPLOYED:
            raise AttemptFailedError(f"worker {entry.id} was lost: {reason}")

    def _free_workers(self) -> list[WorkerEntry]:
        return [w for w in self.workers.values() if w.status is WorkerStatus.IDLE]

    def drain_membership(self) -> None:
        """Apply the joins and losses that arrived while no job runs."""
        while True:
            try:
                wid, event = self.events.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(AttemptFailedError):
                self._membership(wid, event)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Shut every worker down (they exit), stop the launcher, close the listener."""
        self._closed.set()
        for w in self.workers.values():
            if w.status is not WorkerStatus.LOST:
                w.send(control.Shutdown("the job ended"))
        if self.launcher is not None:
            self.launcher.close()
        for w in self.workers.values():
            w.conn.close()
        # close() alone leaves a thread blocked in accept() listening on the port
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
