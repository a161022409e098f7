"""The job coordinator: runs one job on workers, through failures, to its end.

It owns the plan, the placement of subtasks on the workers' slots, the
checkpoint coordinator (and so the manifests), and the restart strategy.
Workers register over authenticated control connections; the coordinator
deploys attempts on them:

1. wait until the registered workers offer enough free slots (the launcher,
   if any, replaces workers that exited);
2. place the subtasks and send every worker its :class:`~control.Deploy`
   of attempt ``a`` (with the checkpoint to restore);
3. while the attempt runs: trigger checkpoints at the sources, collect the
   acknowledgements, and after a manifest is written tell every worker the
   checkpoint completed (sinks commit then);
4. when every task finished: one final checkpoint, then ``Finish`` and the
   counts; on a stop request: a stop checkpoint, then ``Finish``;
5. on a failure — a worker reports one, its connection breaks, or its
   heartbeat stops — cancel attempt ``a`` everywhere, ask the restart
   strategy, and deploy attempt ``a + 1`` from the latest completed
   checkpoint (global rollback, as Flink does for pipelined exchanges).

Fencing: acknowledgements and reports of any attempt but the current one
are dropped, and a worker given up on is disconnected, so a partitioned or
paused worker can neither complete a checkpoint nor commit output.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import pickle
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from weirflow.checkpoint import (
    CheckpointConfig,
    CheckpointCoordinator,
    CheckpointStatus,
    CheckpointStorage,
)
from weirflow.errors import CheckpointError, ConfigError, JobFailedError, WeirflowError
from weirflow.graph import LogicalGraph, compile_plan
from weirflow.records import JobResult, OperatorCounts
from weirflow.runtime import control
from weirflow.runtime.build import RuntimeOptions
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.launcher import Launcher
from weirflow.runtime.placement import place
from weirflow.runtime.restart import RestartStrategy
from weirflow.runtime.wire import (
    ConnectionClosedError,
    FramedConnection,
    PeerAuthenticationError,
    authenticate_listener,
    parse_address,
)

log = logging.getLogger("weirflow.coordinator")

_STOP_ATTEMPTS = 3
_TICK_S = 0.005


@dataclass(frozen=True)
class JobSpec:
    """What to run.

    Attributes:
        job: ``JOB.py[:NAME]``, importable on every worker.
        graph: the job's logical graph (loaded here too, for names and checks).
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        checkpoint: checkpoint configuration, or ``None`` (no checkpoints).
        guarantee: the delivery guarantee (``at_most_once`` runs without checkpoints).
        restore: ``None``, ``"latest"``, ``"latest-or-fresh"`` or a checkpoint path.
        restart: the restart strategy.
        options: runtime sizes.
    """

    job: str
    graph: LogicalGraph
    parallelism: int
    max_parallelism: int = 128
    checkpoint: CheckpointConfig | None = None
    guarantee: str = "exactly_once"
    restore: str | None = None
    restart: RestartStrategy = field(default_factory=RestartStrategy.none)
    options: RuntimeOptions = field(default_factory=RuntimeOptions)


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
        self.conn = conn
        self.status = WorkerStatus.IDLE
        self.last_heard = time.monotonic()
        self.subtasks: list[int] = []

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

    def send(self, message: control.Message) -> None:
        """Send, ignoring a broken connection (its reader reports the loss)."""
        with contextlib.suppress(ConnectionClosedError):
            self.conn.send(control.encode_message(message))


class _Joined:
    def __init__(self, entry: WorkerEntry) -> None:
        self.entry = entry


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class AttemptFailedError(WeirflowError):
    """The running attempt failed; the restart strategy decides what follows."""

    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class JobCoordinator:
    """Runs a job on registered workers (see the module docs for the steps).

    Args:
        spec: what to run.
        secret: the job's secret; workers must hold it.
        listen: ``HOST:PORT`` for worker connections (port 0: any free port).
        launcher: starts and replaces workers; ``None`` when they are started
            by hand (``weirflow worker``).
        heartbeat_interval_s: how often heartbeats go both ways (s).
        heartbeat_timeout_s: silence after which a worker is given up (s).
        worker_wait_s: how long an attempt waits for enough free slots (s).
        stop: when set, the job takes a stop checkpoint and ends.
        listener: progress callbacks.
        clock: processing time in ms.

    Raises:
        OSError: ``listen`` cannot be bound.
    """

    def __init__(
        self,
        spec: JobSpec,
        secret: bytes,
        listen: str = "127.0.0.1:0",
        *,
        launcher: Launcher | None = None,
        heartbeat_interval_s: float = 1.0,
        heartbeat_timeout_s: float = 10.0,
        worker_wait_s: float = 60.0,
        stop: threading.Event | None = None,
        listener: RunListener | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if spec.guarantee == "at_most_once" and spec.checkpoint is not None:
            raise ConfigError("at_most_once takes no checkpoints")
        self.spec = spec
        self.secret = secret
        self.launcher = launcher
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.worker_wait_s = worker_wait_s
        self.stop = stop or threading.Event()
        self.listener = listener or RunListener()
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        host, port = parse_address(listen)
        self._server = socket.create_server((host, port))
        self.address = f"{host}:{self._server.getsockname()[1]}"
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.workers: dict[str, WorkerEntry] = {}
        self.attempt = 0
        self.restarts = 0
        self.checkpoints_completed = 0
        self.recovery_ms: list[int] = []
        self.recovery_started: int | None = None
        self._closed = threading.Event()
        plan = compile_plan(spec.graph, spec.parallelism, spec.max_parallelism)
        p = spec.parallelism
        self.task_ids = [
            f"{spec.graph.get(chain.head).name}[{i}/{p}]" for chain in plan.chains for i in range(p)
        ]
        self.storage = (
            CheckpointStorage(spec.checkpoint.storage, spec.graph.name)
            if spec.checkpoint is not None
            else None
        )

    # -- connections (threads) ---------------------------------------------------

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
            conn = FramedConnection(sock, f"worker at {addr[0]}:{addr[1]}")
            register = control.decode_message(conn.recv())
            if not isinstance(register, control.Register):
                raise ConnectionClosedError(f"expected Register, got {type(register).__name__}")
        except (PeerAuthenticationError, OSError, WeirflowError, msgspec.DecodeError) as e:
            log.warning("refused a connection from %s:%s: %s", addr[0], addr[1], e)
            sock.close()
            return
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

    # -- the run -----------------------------------------------------------------

    def run(self) -> JobResult:
        """Run the job to its end (or stop), through restarts.

        Returns:
            The :class:`~weirflow.records.JobResult`: counts summed over workers.

        Raises:
            JobFailedError: an attempt failed and no restart follows.
            ConfigError: the options or the checkpoint to restore do not fit.
        """
        threading.Thread(target=self._accept, name="weirflow-accept", daemon=True).start()
        threading.Thread(target=self._heartbeats, name="weirflow-heartbeats", daemon=True).start()
        start = self.clock()
        try:
            if self.launcher is not None:
                self.launcher.start(self.address)
            return self._attempts(start)
        finally:
            self._shutdown()

    def _attempts(self, start: int) -> JobResult:
        spec = self.spec
        tracker = spec.restart.tracker()
        restore_url, baseline = self._initial_restore()
        while True:
            self.attempt += 1
            started = self.clock()
            try:
                counts = self._run_attempt(restore_url)
            except AttemptFailedError as e:
                failed_at = self.clock()
                self._cancel(str(e))
                wait_ms = tracker.on_failure(failed_at, started) if e.retriable else None
                self.listener.attempt_failed(self.attempt, e, wait_ms)
                if wait_ms is None:
                    raise JobFailedError(f"job {spec.graph.name!r} failed: {e}") from e
                log.warning(
                    "attempt %d of job %s failed (%s); restarting in %d ms",
                    self.attempt,
                    spec.graph.name,
                    e,
                    wait_ms,
                )
                self._sleep_handling_events(wait_ms / 1000)
                self.restarts += 1
                latest = self._latest_of_this_run(baseline)
                if latest is not None:
                    restore_url = latest
                self.recovery_started = failed_at
                continue
            return JobResult(
                job=spec.graph.name,
                parallelism=spec.parallelism,
                operators=counts,
                checkpoints_completed=self.checkpoints_completed,
                restarts=self.restarts,
                duration_ms=self.clock() - start,
            )

    def _initial_restore(self) -> tuple[str | None, int]:
        storage = self.storage
        if storage is None:
            if self.spec.restore is not None:
                raise ConfigError("restoring needs checkpoints: run with a checkpoint storage")
            return None, 0
        try:
            manifest = storage.resolve_restore(self.spec.restore)
        except CheckpointError as e:
            raise ConfigError(str(e)) from e
        # A restart restores only checkpoints this run completed (not an earlier run's).
        baseline = max(
            [*storage.completed_checkpoints(), manifest.checkpoint_id if manifest else 0]
        )
        if manifest is None:
            return None, baseline
        if self.spec.restore in ("latest", "latest-or-fresh"):
            return storage.checkpoint_url(manifest.checkpoint_id), baseline
        return self.spec.restore, baseline

    def _latest_of_this_run(self, baseline: int) -> str | None:
        assert self.storage is not None or baseline == 0
        if self.storage is None:
            return None
        latest = self.storage.latest_valid(
            lambda path, err: log.warning("skipping unusable checkpoint %s: %s", path, err)
        )
        if latest is None or latest.checkpoint_id <= baseline:
            return None
        return self.storage.checkpoint_url(latest.checkpoint_id)

    def _sleep_handling_events(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                wid, event = self.events.get(timeout=left)
            except queue.Empty:
                return
            self._membership(wid, event)

    def _membership(self, wid: str, event: Any) -> WorkerEntry | None:
        """Apply joins and losses; return the worker a message came from (``None``: unknown)."""
        if isinstance(event, _Joined):
            self.workers[event.entry.id] = event.entry
            log.info(
                "worker %s joined from %s with %d slot(s)",
                event.entry.id,
                event.entry.host,
                event.entry.slots,
            )
            return None
        entry = self.workers.get(wid)
        if entry is None or entry.status is WorkerStatus.LOST:
            return None
        if isinstance(event, _Lost):
            self._give_up(entry, event.reason)
            return None
        return entry

    def _give_up(self, entry: WorkerEntry, reason: str) -> None:
        was = entry.status
        entry.move(WorkerStatus.LOST)
        entry.conn.close()
        log.warning("worker %s lost: %s", entry.id, reason)
        if self.launcher is not None:
            self.launcher.release(entry.pid)
        if was is WorkerStatus.DEPLOYED:
            raise AttemptFailedError(f"worker {entry.id} was lost: {reason}")

    # -- one attempt ---------------------------------------------------------------

    def _free_workers(self) -> list[WorkerEntry]:
        return [w for w in self.workers.values() if w.status is WorkerStatus.IDLE]

    def _await_slots(self) -> list[WorkerEntry]:
        need = self.spec.parallelism
        deadline = time.monotonic() + self.worker_wait_s
        while True:
            if self.launcher is not None:
                self.launcher.replace_exited()
            free = self._free_workers()
            if sum(w.slots for w in free) >= need:
                return free
            left = deadline - time.monotonic()
            if left <= 0:
                have = sum(w.slots for w in free)
                raise AttemptFailedError(
                    f"waited {self.worker_wait_s:.0f} s for {need} free slots, the workers offer "
                    f"{have}: start more workers (weirflow worker --coordinator {self.address}) "
                    "or lower --parallelism",
                    retriable=False,
                )
            try:
                wid, event = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            with contextlib.suppress(AttemptFailedError):
                self._membership(wid, event)

    def _check_shared_storage(self, used: list[WorkerEntry]) -> None:
        if self.storage is None:
            return
        hosts = {w.host for w in used}
        if len(hosts) > 1 and self.storage.root_url.startswith("file://"):
            raise AttemptFailedError(
                f"checkpoint storage {self.storage.root_url} is a local folder, but the workers "
                f"run on {len(hosts)} hosts ({', '.join(sorted(hosts))}): each would write its "
                "state where the others cannot read it. Use shared storage (s3://..., or a "
                "folder mounted at the same path on every host)",
                retriable=False,
            )

    def _run_attempt(self, restore_url: str | None) -> dict[str, OperatorCounts]:
        spec = self.spec
        free = self._await_slots()
        owners = place(spec.parallelism, [(w.id, w.slots) for w in free])
        used = [w for w in free if w.id in set(owners.values())]
        self._check_shared_storage(used)
        peers = {w.id: w.data_address for w in used}
        mode = spec.checkpoint.mode if spec.checkpoint is not None else spec.guarantee
        for w in used:
            w.subtasks = [i for i, o in owners.items() if o == w.id]
            w.move(WorkerStatus.DEPLOYED)
            w.send(
                control.Deploy(
                    attempt=self.attempt,
                    job=spec.job,
                    parallelism=spec.parallelism,
                    max_parallelism=spec.max_parallelism,
                    subtasks=w.subtasks,
                    owners=owners,
                    peers=peers,
                    checkpoint_dir=spec.checkpoint.storage if spec.checkpoint else None,
                    mode=mode,
                    restore=restore_url,
                    source_batch_size=spec.options.source_batch_size,
                    buffer_size=spec.options.buffer_size,
                    channel_capacity=spec.options.channel_capacity,
                )
            )
        restored_from = None
        if restore_url is not None and self.storage is not None:
            restored_from = (
                int(restore_url.rstrip("/").rsplit("chk-", 1)[-1])
                if "chk-" in (restore_url)
                else None
            )
        self.listener.attempt_started(self.attempt - 1, restored_from)
        run = _AttemptRun(self, used)
        try:
            return run.run()
        finally:
            if run.checkpoints is not None:
                run.checkpoints.shutdown()

    def _cancel(self, reason: str) -> None:
        for w in self.workers.values():
            if w.status is WorkerStatus.DEPLOYED:
                w.send(control.Cancel(self.attempt))
                w.move(WorkerStatus.IDLE)

    def _shutdown(self) -> None:
        self._closed.set()
        for w in self.workers.values():
            if w.status is not WorkerStatus.LOST:
                w.send(control.Shutdown("the job ended"))
        if self.launcher is not None:
            self.launcher.close()
        for w in self.workers.values():
            w.conn.close()
        self._server.close()


class _AttemptRun:
    """The coordinator's side of one running attempt."""

    def __init__(self, coordinator: JobCoordinator, used: list[WorkerEntry]) -> None:
        self.c = coordinator
        self.used = {w.id: w for w in used}
        self.running: set[str] = set()
        self.tasks_finished: set[str] = set()
        self.finished: dict[str, dict[str, list[int]]] = {}
        self.final_checkpoint: int | None = None
        self.stop_checkpoint: int | None = None
        self.stop_tries = 0
        self.finishing = False
        self.checkpoints: CheckpointCoordinator | None = None

    def broadcast(self, message: control.Message) -> None:
        for w in self.used.values():
            w.send(message)

    def run(self) -> dict[str, OperatorCounts]:
        c = self.c
        while True:
            try:
                wid, event = c.events.get(timeout=_TICK_S)
            except queue.Empty:
                wid, event = "", None
            if event is not None:
                entry = c._membership(wid, event)
                if entry is not None and entry.id in self.used:
                    self._on_message(entry, event)
            if len(self.finished) == len(self.used):
                return self._counts()
            self._tick(c.clock())

    def _start_checkpoints(self) -> None:
        c = self.c
        if c.spec.checkpoint is None or c.storage is None:
            return
        last = max(c.storage.completed_checkpoints(), default=0)
        self.checkpoints = CheckpointCoordinator(
            c.spec.checkpoint,
            c.storage,
            c.task_ids,
            c.clock,
            parallelism=c.spec.parallelism,
            max_parallelism=c.spec.max_parallelism,
            first_checkpoint_id=last + 1,
        )

    def _on_message(self, entry: WorkerEntry, message: Any) -> None:
        c = self.c
        if getattr(message, "attempt", c.attempt) != c.attempt:
            return
        if isinstance(message, control.Failed):
            raise AttemptFailedError(
                f"worker {entry.id}: {message.message}", retriable=message.retriable
            )
        if isinstance(message, control.Running):
            self.running.add(entry.id)
            if self.running == set(self.used):
                self._start_checkpoints()
                if c.recovery_started is not None:
                    c.recovery_ms.append(c.clock() - c.recovery_started)
                    c.recovery_started = None
        elif isinstance(message, control.Acknowledge):
            self._acknowledge(message)
        elif isinstance(message, control.Decline) and self.checkpoints is not None:
            self.checkpoints.decline(message.checkpoint_id, message.task, message.reason)
        elif isinstance(message, control.TasksFinished):
            self.tasks_finished.add(entry.id)
            if self.tasks_finished == set(self.used) and self.running == set(self.used):
                if self.checkpoints is None:
                    self._finish()
                elif self.final_checkpoint is None and self.stop_checkpoint is None:
                    self.final_checkpoint = self._trigger_now(stop=False)
        elif isinstance(message, control.Finished):
            self.finished[entry.id] = message.counts

    def _acknowledge(self, message: control.Acknowledge) -> None:
        if self.checkpoints is None:
            return
        snapshot = pickle.loads(message.snapshot)
        completed = self.checkpoints.acknowledge(message.checkpoint_id, snapshot)
        if completed is None:
            return
        cid = completed.checkpoint_id
        self.broadcast(control.Complete(self.c.attempt, cid))
        self.c.checkpoints_completed += 1
        self.c.listener.checkpoint_completed(completed)
        for target in (self.final_checkpoint, self.stop_checkpoint):
            if target is not None and cid >= target:
                self._finish()

    def _finish(self) -> None:
        if not self.finishing:
            self.finishing = True
            self.broadcast(control.Finish(self.c.attempt))

    def _trigger_now(self, stop: bool) -> int:
        assert self.checkpoints is not None
        cid = self.checkpoints.trigger_now()
        self.broadcast(control.Trigger(self.c.attempt, cid, self.c.clock(), stop=stop))
        return cid

    def _tick(self, now_ms: int) -> None:
        c = self.c
        if self.finishing:
            return
        if c.stop.is_set() and self.checkpoints is None and self.running == set(self.used):
            self._finish()
            return
        ckpt = self.checkpoints
        if ckpt is None:
            return
        ckpt.check_timeouts(now_ms)
        target = self.stop_checkpoint or self.final_checkpoint
        if target is not None:
            status = ckpt.status(target)
            if status is not None and status not in (
                CheckpointStatus.PENDING,
                CheckpointStatus.COMPLETED,
            ):
                self.stop_tries += 1
                if self.stop_tries > _STOP_ATTEMPTS:
                    raise AttemptFailedError(
                        f"checkpoint {target} (the last one, so that sinks commit) failed "
                        f"{_STOP_ATTEMPTS} times; see the log for the cause"
                    )
                if self.stop_checkpoint is not None:
                    self.stop_checkpoint = self._trigger_now(stop=True)
                else:
                    self.final_checkpoint = self._trigger_now(stop=False)
            return
        if c.stop.is_set():
            self.stop_checkpoint = self._trigger_now(stop=True)
            return
        cid = ckpt.maybe_trigger(now_ms)
        if cid is not None:
            self.broadcast(control.Trigger(c.attempt, cid, now_ms))

    def _counts(self) -> dict[str, OperatorCounts]:
        total: dict[str, list[int]] = {}
        for per_worker in self.finished.values():
            for name, values in per_worker.items():
                acc = total.setdefault(name, [0] * len(values))
                for k, v in enumerate(values):
                    acc[k] += v
        for w in self.used.values():
            w.move(WorkerStatus.IDLE)
        return {name: OperatorCounts(*values) for name, values in total.items()}
