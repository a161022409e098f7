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
import pickle
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from weirflow.checkpoint import CheckpointConfig, CheckpointStorage, open_job_storage
from weirflow.errors import ConfigError, WeirflowError, is_retriable
from weirflow.faults import fault_point
from weirflow.graph import LogicalGraph, compile_plan
from weirflow.runtime import control
from weirflow.runtime.build import RuntimeOptions, build_job
from weirflow.runtime.dataplane import DataPlane, PeerLink
from weirflow.runtime.events import CheckpointBarrier
from weirflow.runtime.job import counts, wall_clock_ms
from weirflow.runtime.lifecycle import AttemptLifecycle, AttemptState
from weirflow.runtime.local import LocalScheduler
from weirflow.runtime.operators import SinkLogic
from weirflow.runtime.operators.source import refuse_duplicate_sink_output
from weirflow.runtime.snapshots import encode_task_snapshot, plan_restore, write_task_snapshot
from weirflow.runtime.task import Task, TaskState
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


class CoordinatorLostError(WeirflowError):
    """The coordinator's connection broke or it fell silent past the heartbeat timeout."""

    retriable = True


class _Lost:
    """Put on the control queue when the coordinator's connection ends."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


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
    ) -> None:
        self.coordinator = coordinator
        self.secret = secret
        self.slots = slots
        self.load_graph = load_graph
        self.host_address = host_address
        self.reconnect = reconnect
        self.connect_timeout_s = connect_timeout_s
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
            session = _Session(self, conn)
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


class _Session:
    """One connection to the coordinator: its reader and heartbeat threads, and the deployments."""

    def __init__(self, worker: Worker, conn: FramedConnection) -> None:
        self.worker = worker
        self.conn = conn
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.last_heard = time.monotonic()
        self.heartbeat_interval_s = 1.0
        self.heartbeat_timeout_s = 10.0
        self.deployment: _Deployment | None = None
        self._closed = threading.Event()

    def send(self, message: control.Message) -> None:
        """Send a control message; a broken connection shows up on the reader side."""
        try:
            self.conn.send(control.encode_message(message))
        except ConnectionClosedError:
            self.inbox.put(_Lost("sending to the coordinator failed"))

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
            self.inbox.put(_Lost(str(e)))

    def _close_plane(self) -> None:
        """Close the attempt's data links: unblocks a scheduler stuck sending to a dead peer."""
        plane = self.worker._plane
        if plane is not None:
            plane.close()

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat_interval_s):
            deployment = self.deployment
            sample = deployment.sample() if deployment is not None else {}
            self.send(control.Heartbeat(self.worker.attempt, sample))

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
                w.worker_id, w.slots, socket.gethostname(), w.data_address, os.getpid()
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
                if isinstance(message, _Lost):
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
                    self.deployment = _Deployment(self, message)
                    try:
                        self.deployment.run()
                    finally:
                        self.deployment = None
        finally:
            self._closed.set()


class _Deployment:
    """One attempt's subtasks in this worker."""

    def __init__(self, session: _Session, deploy: control.Deploy) -> None:
        self.session = session
        self.deploy = deploy
        self.attempt = deploy.attempt
        self.tasks: list[Task] = []
        self.pending: set[int] = set()
        self.acked: dict[int, set[str]] = {}
        self.storage: CheckpointStorage | None = None
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="weirflow-checkpoint-writer")
        self.finished_reported = False
        self.lifecycle = AttemptLifecycle(deploy.attempt)

    def run(self) -> None:
        """Build, run and end the attempt; report its end to the coordinator."""
        w = self.session.worker
        d = self.deploy
        w.attempt = d.attempt
        built = None
        plane = None
        try:
            try:
                graph = w.graph(d.job)
            except ConfigError as e:
                raise ConfigError(
                    f"worker on host {socket.gethostname()} cannot load the job: {e} (the job "
                    "file must be importable at the same path on every worker)"
                ) from e
            plan = compile_plan(graph, d.parallelism, d.max_parallelism)
            restored = None
            if d.checkpoint_dir is not None:
                if d.storage_probe is not None:
                    _check_probe(d.checkpoint_dir, graph.name, d.storage_probe)
                self.storage = open_job_storage(
                    CheckpointConfig(storage=d.checkpoint_dir), graph.name
                )
                if d.restore is not None:
                    manifest = self.storage.load_savepoint(d.restore)
                    restored = plan_restore(
                        manifest, self.storage, graph, d.parallelism, d.max_parallelism
                    )
                    refuse_duplicate_sink_output(
                        graph,
                        d.parallelism,
                        restored,
                        manifest.checkpoint_id,
                        allow=d.allow_duplicates_after_fallback,
                    )
            plane = DataPlane(w.connect_peers(d))
            w._plane = plane
            options = RuntimeOptions(d.source_batch_size, d.buffer_size, d.channel_capacity)
            built = build_job(
                graph,
                plan,
                options,
                wall_clock_ms,
                time.sleep,
                self._on_snapshot,
                restored,
                d.mode,
                subtasks=d.subtasks,
                remote=_RemoteEnds(d.owners, w.worker_id, plane),
            )
            self.tasks = built.tasks
            self.plane = plane
            self.session.send(control.Running(self.attempt))
            self.lifecycle.move(AttemptState.RUNNING)
            scheduler = LocalScheduler(built.tasks, built.channels, wall_clock_ms, time.sleep)
            scheduler.hooks.before_round.append(self._on_round)
            if scheduler.run():
                plane.pump()
                while not self.lifecycle.over:
                    if not self._on_round(wall_clock_ms()):
                        time.sleep(0.001)
            if self.lifecycle.state is AttemptState.FINISHING:
                self._finish(graph, built)
        except CoordinatorLostError:
            raise
        except BaseException as e:
            if self.lifecycle.state is not AttemptState.CANCELLED:
                log.warning("attempt %d failed in worker %s: %s", self.attempt, w.worker_id, e)
                retriable = is_retriable(e)
                self.session.send(
                    control.Failed(self.attempt, f"{type(e).__name__}: {e}", retriable)
                )
            if isinstance(e, CoordinatorLostError | KeyboardInterrupt):
                raise
        finally:
            self.writer.shutdown(wait=True)
            for task in self.tasks:
                if self.lifecycle.state is not AttemptState.FINISHED:
                    task.fail()
                task.close()
            if plane is not None:
                plane.close()
            w._plane = None

    def sample(self) -> dict[str, dict[int, list[int]]]:
        """Per-subtask operator counts, read from the heartbeat thread (ints: no lock needed)."""
        out: dict[str, dict[int, list[int]]] = {}
        for task in list(self.tasks):
            for op in task.chain:
                out.setdefault(op.name, {})[task.subtask] = [
                    op.records_in,
                    op.records_out,
                    op.filtered,
                    op.late,
                    op.dead_lettered,
                ]
        return out

    def _finish(self, graph: LogicalGraph, built: Any) -> None:
        if self.storage is None:
            for task in self.tasks:
                for op in task.chain:
                    if isinstance(op, SinkLogic):
                        op.finish()
        per_op = counts(graph, built)
        self.session.send(
            control.Finished(self.attempt, {name: list(c) for name, c in per_op.items()})
        )
        self.lifecycle.move(AttemptState.FINISHED)

    # -- the per-round hook (scheduler thread) ------------------------------------

    def _on_round(self, now_ms: int) -> bool:
        """Deliver network input, follow the coordinator, snapshot ended tasks.

        Returns:
            ``True`` when the attempt is over (finish or cancel).

        Raises:
            CoordinatorLostError: the coordinator is gone.
            ConnectionClosedError: a data connection broke.
        """
        s = self.session
        if not self._all_done():
            self.plane.pump()
        while True:
            try:
                message = s.inbox.get_nowait()
            except queue.Empty:
                break
            self._handle(message, now_ms)
            if self.lifecycle.over:
                return True
        s.check_coordinator()
        self._snapshot_ended_tasks()
        if not self.finished_reported and self._all_done():
            self.finished_reported = True
            s.send(control.TasksFinished(self.attempt))
        return False

    def _cancel(self) -> None:
        if self.lifecycle.state is not AttemptState.CANCELLED:
            self.lifecycle.move(AttemptState.CANCELLED)

    def _all_done(self) -> bool:
        return all(t.done for t in self.tasks)

    def _handle(self, message: Any, now_ms: int) -> None:
        if isinstance(message, _Lost):
            self._cancel()
            raise CoordinatorLostError(message.reason)
        if isinstance(message, control.Shutdown):
            self._cancel()
            self.session.inbox.put(message)
            return
        if isinstance(message, control.Deploy):
            # A newer deployment without a cancel: this attempt is over.
            self._cancel()
            self.session.inbox.put(message)
            return
        if control.of_other_attempt(message, self.attempt):
            return
        if isinstance(message, control.Trigger):
            self._trigger(message, now_ms)
        elif isinstance(message, control.Complete):
            fault_point("after_manifest")
            for task in self.tasks:
                task.notify_checkpoint_complete(message.checkpoint_id)
            self.pending = {c for c in self.pending if c > message.checkpoint_id}
            for old in [c for c in self.acked if c <= message.checkpoint_id]:
                del self.acked[old]
        elif isinstance(message, control.Finish):
            self.lifecycle.move(AttemptState.FINISHING)
        elif isinstance(message, control.Cancel):
            self._cancel()

    def _trigger(self, message: control.Trigger, now_ms: int) -> None:
        barrier = CheckpointBarrier(
            message.checkpoint_id, message.timestamp_ms, aligned=self.deploy.mode == "exactly_once"
        )
        self.pending.add(message.checkpoint_id)
        for task in self.tasks:
            if task.is_source and task.state is TaskState.RUNNING and not task.paused:
                task.snapshot_and_forward(barrier)
                if message.stop:
                    # Nothing follows the stop barrier: the stop checkpoint holds all that was read.
                    task.paused = True
        self._snapshot_ended_tasks()

    def _snapshot_ended_tasks(self) -> None:
        for checkpoint_id in sorted(self.pending):
            acked = self.acked.get(checkpoint_id, set())
            for task in self.tasks:
                if task.state in _ENDED and task.name not in acked:
                    task.snapshot_finished(checkpoint_id)

    def _on_snapshot(self, task: Task, checkpoint_id: int, states: dict[str, Any]) -> None:
        snap = encode_task_snapshot(task.name, task.subtask, task.head.ctx.key_group_range, states)
        self.acked.setdefault(checkpoint_id, set()).add(task.name)
        self.writer.submit(self._write_and_acknowledge, checkpoint_id, snap)

    def _write_and_acknowledge(self, checkpoint_id: int, snap: Any) -> None:
        assert self.storage is not None
        try:
            fault_point("state_write")
            written = write_task_snapshot(self.storage, checkpoint_id, snap, self.attempt)
        except Exception as e:
            log.warning("checkpoint %d failed in %s: %s", checkpoint_id, snap.task_id, e)
            self.session.send(
                control.Decline(
                    self.attempt, checkpoint_id, snap.task_id, f"{type(e).__name__}: {e}"
                )
            )
            return
        self.session.send(
            control.Acknowledge(self.attempt, checkpoint_id, pickle.dumps(written, protocol=5))
        )


class _RemoteEnds:
    """The build's view of which worker hosts each subtask (see ``build.RemoteEnds``)."""

    def __init__(self, owners: dict[int, str], me: str, plane: DataPlane) -> None:
        self.owners = owners
        self.me = me
        self.plane = plane

    def owner(self, subtask: int) -> str | None:
        worker = self.owners[subtask]
        return None if worker == self.me else worker

    def output(self, channel_id: int, capacity: int, name: str, peer: str) -> Any:
        return self.plane.output(channel_id, capacity, name, peer)

    def input(self, channel_id: int, capacity: int, name: str, peer: str) -> Any:
        return self.plane.input(channel_id, capacity, name, peer)


def _check_probe(checkpoint_dir: str, job: str, token: str) -> None:
    """Fail unless the coordinator's probe is in the job's checkpoint folder as seen here.

    Raises:
        ConfigError: the folder is not the one the coordinator writes (not shared).
    """
    storage = CheckpointStorage(checkpoint_dir, job)
    path = f"{storage.root}/{control.SHARED_PROBE}"
    try:
        found = storage.fs.cat_file(path).decode(errors="replace")
    except OSError:
        found = None
    if found != token:
        raise ConfigError(
            f"checkpoint storage {storage.root_url} is a local folder that this worker on host "
            f"{socket.gethostname()} does not share with the coordinator: each host would write "
            "its state where the others cannot read it. Use shared storage (s3://..., or a "
            "folder mounted at the same path on every host)"
        )
