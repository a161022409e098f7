"""Savepoints asked of a running job, and the checkpoints that answer them.

A request comes from another thread (the job's control endpoint, a signal
handler) and is answered on the thread that runs the job's checkpoints (the
local scheduler's round hook, or the coordinator's attempt loop):

1. :meth:`SavepointRequests.submit` queues a request and returns its future;
2. the job's thread :meth:`~SavepointRequests.take`\\ s it, triggers an
   aligned checkpoint that is written as a savepoint, and keeps the request in
   a :class:`SavepointWaiters` under that checkpoint's id;
3. when the checkpoint completed (its savepoint folder written) or failed,
   the waiter's future gets the savepoint's URL or the error.

A request with ``stop=True`` makes the savepoint the job's stop checkpoint:
sources emit nothing after its barrier, sinks commit it, the run returns. If
the attempt fails first, the request fails, and the next attempt stops with
a plain stop checkpoint (the stop was asked for, the savepoint is lost).
Savepoints are always aligned, also in a job with unaligned checkpoints, so
that they hold no in-flight buffers and restore at any parallelism.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from weirflow.checkpoint import CheckpointStatus, CompletedCheckpoint
from weirflow.errors import CheckpointError


@dataclass(frozen=True)
class SavepointRequest:
    """One request for a savepoint.

    Attributes:
        target: the savepoint folder (path or fsspec URL), or ``None`` for the
            job's default folder ``<job>/savepoints/savepoint-<id>``.
        stop: stop the job after the savepoint completed (sinks committed).
        done: resolves to the savepoint folder's URL, or to a
            :class:`~weirflow.errors.CheckpointError` saying why none was written.
    """

    target: str | None
    stop: bool
    done: Future[str] = field(default_factory=Future, compare=False)


class SavepointRequests:
    """A thread-safe queue of savepoint requests to one running job."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[SavepointRequest] = queue.SimpleQueue()
        self._stop_taken = threading.Event()
        self._stop_submitted = threading.Event()

    def submit(self, target: str | None, stop: bool) -> Future[str]:
        """Queue a request; return the future that its savepoint resolves.

        Args:
            target: the savepoint folder, or ``None`` for the default one.
            stop: whether the job stops after the savepoint.
        """
        request = SavepointRequest(target, stop)
        if stop:
            self._stop_submitted.set()
        self._queue.put(request)
        return request.done

    @property
    def stop_submitted(self) -> bool:
        """Whether a request to stop came (a job that is not running, e.g. waiting out a
        restart backoff, stops at once then)."""
        return self._stop_submitted.is_set()

    def fail_queued(self, reason: str) -> None:
        """Fail every request not taken yet (the job ended first)."""
        for request in self.take():
            request.done.set_exception(CheckpointError(f"no savepoint: {reason}"))

    @property
    def stop_taken(self) -> bool:
        """Whether the job took a request to stop: it stops, also after a restart."""
        return self._stop_taken.is_set()

    def take(self) -> list[SavepointRequest]:
        """Return every queued request (never blocks)."""
        taken = []
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return taken
            if request.stop:
                self._stop_taken.set()
            taken.append(request)


class SavepointWaiters:
    """The requests of one attempt whose savepoint checkpoints are under way, by checkpoint id."""

    def __init__(self) -> None:
        self._by_id: dict[int, SavepointRequest] = {}

    def add(self, checkpoint_id: int, request: SavepointRequest) -> None:
        """Answer ``request`` when checkpoint ``checkpoint_id`` completes or fails."""
        self._by_id[checkpoint_id] = request

    def move(self, old_id: int, new_id: int) -> None:
        """A failed stop savepoint was triggered again as ``new_id``."""
        if old_id in self._by_id:
            self._by_id[new_id] = self._by_id.pop(old_id)

    def target_of(self, checkpoint_id: int) -> str | None:
        """The savepoint folder asked for checkpoint ``checkpoint_id`` (``None``: default)."""
        request = self._by_id.get(checkpoint_id)
        return request.target if request is not None else None

    def completed(self, completed: CompletedCheckpoint) -> None:
        """Answer the request of a completed checkpoint with its savepoint (or its error)."""
        request = self._by_id.pop(completed.checkpoint_id, None)
        if request is None:
            return
        if completed.savepoint_url is not None:
            request.done.set_result(completed.savepoint_url)
        else:
            request.done.set_exception(
                CheckpointError(
                    f"checkpoint {completed.checkpoint_id} completed but its savepoint could "
                    f"not be written: {completed.savepoint_error}"
                )
            )

    def failed(self, status_of: dict[int, CheckpointStatus | None], keep: int | None) -> None:
        """Fail the requests whose checkpoint failed, except ``keep`` (retried as a stop).

        Args:
            status_of: checkpoint id → its status (``None``: unknown).
            keep: the stop savepoint's id, which the caller triggers again.
        """
        for cid in list(self._by_id):
            status = status_of.get(cid)
            if cid != keep and status not in (None, CheckpointStatus.PENDING):
                self._by_id.pop(cid).done.set_exception(
                    CheckpointError(f"the savepoint's checkpoint {cid} failed: {status}")
                )

    def ids(self) -> list[int]:
        """Checkpoint ids with a waiting request."""
        return list(self._by_id)

    def fail_all(self, reason: str) -> None:
        """Fail every waiting request (the attempt ended before its savepoint completed)."""
        for cid, request in self._by_id.items():
            if not request.done.done():
                request.done.set_exception(
                    CheckpointError(f"no savepoint from checkpoint {cid}: {reason}")
                )
        self._by_id.clear()
