"""The coordinator's view of its workers: one entry per registered worker, and its life cycle."""

from __future__ import annotations

import contextlib
import enum
import time

from weirflow.errors import WeirflowError
from weirflow.runtime import control
from weirflow.runtime.wire import ConnectionClosedError, FramedConnection


class WorkerStatus(enum.Enum):
    """A registered worker's life cycle, as the coordinator sees it."""

    IDLE = "idle"  # registered, hosts nothing
    DEPLOYED = "deployed"  # hosts subtasks of the current attempt
    LOST = "lost"  # exited, disconnected or silent: given up for good


_WORKER_TRANSITIONS = {
    WorkerStatus.IDLE: {WorkerStatus.DEPLOYED, WorkerStatus.LOST},
    WorkerStatus.DEPLOYED: {WorkerStatus.IDLE, WorkerStatus.LOST},
    WorkerStatus.LOST: set(),
}


class WorkerEntry:
    """A registered worker."""

    def __init__(self, register: control.Register, conn: FramedConnection) -> None:
        self.id = register.worker_id
        self.slots = register.slots
        self.host = register.host
        self.data_address = register.data_address
        self.pid = register.pid
        self.location = register.location
        self.conn = conn
        self.status = WorkerStatus.IDLE
        self.last_heard = time.monotonic()
        self.subtasks: list[int] = []
        # operator name → subtask → counts, from the worker's latest heartbeat
        self.sample: dict[str, dict[int, list[int]]] = {}
        # operator name → subtask → connector report, from the same heartbeat
        self.connectors: dict[str, dict[int, control.ConnectorReport]] = {}
        # "<operator>/<split>" → records not read yet, from the same heartbeat
        self.split_lag: dict[str, int] = {}

    def move(self, new: WorkerStatus) -> None:
        """Change status along an allowed transition (same status: no-op).

        Raises:
            WeirflowError: a transition the life cycle does not allow.
        """
        if new is self.status:
            return
        if new not in _WORKER_TRANSITIONS[self.status]:
            raise WeirflowError(f"worker {self.id}: invalid transition {self.status} -> {new}")
        self.status = new
        if new is not WorkerStatus.DEPLOYED:
            self.subtasks = []
            self.sample = {}
            self.connectors = {}
            self.split_lag = {}

    def send(self, message: control.Message) -> None:
        """Send, ignoring a broken connection (its reader reports the loss)."""
        with contextlib.suppress(ConnectionClosedError):
            self.conn.send(control.encode_message(message))
