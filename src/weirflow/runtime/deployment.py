"""One attempt's subtasks in a worker: build, run, follow the coordinator, end.

A :class:`Deployment` is what a worker does with one
:class:`~weirflow.runtime.control.Deploy`:

1. load the job, check the shared checkpoint folder when asked, restore the
   subtasks it names (refusing duplicate sink output as one process does),
   connect the data plane, report ``Running``;
2. step the tasks; once per round pump the network, handle the control
   messages of its attempt (trigger, complete → sinks commit, finish,
   cancel) and snapshot tasks that already finished;
3. end by ``Finish`` (report counts), ``Cancel``, or a failure (report it).
"""

from __future__ import annotations

import logging
import pickle
import queue
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from weirflow.checkpoint import CheckpointConfig, CheckpointStorage, open_job_storage
from weirflow.connectors import ReportsLag
from weirflow.errors import ConfigError, WeirflowError, is_retriable
from weirflow.faults import fault_point
from weirflow.graph import LogicalGraph, compile_plan
from weirflow.metrics import ReportsConnectorStats, configure_from_env
from weirflow.runtime import control
from weirflow.runtime.build import build_job
from weirflow.runtime.dataplane import DataPlane
from weirflow.runtime.events import CheckpointBarrier
from weirflow.runtime.inflight import submit_when_captured
from weirflow.runtime.inflight_restore import plan_in_flight
from weirflow.runtime.job import counts, wall_clock_ms
from weirflow.runtime.lifecycle import AttemptLifecycle, AttemptState
from weirflow.runtime.local import LocalScheduler
from weirflow.runtime.operators import SinkLogic, SourceLogic
from weirflow.runtime.operators.source import refuse_duplicate_sink_output
from weirflow.runtime.restore_points import fit_to_job
from weirflow.runtime.snapshot_files import local_copies_of, local_verifier
from weirflow.runtime.snapshots import encode_task_snapshot, write_task_snapshot
from weirflow.runtime.state_restore import discard_downloads, plan_restore
from weirflow.runtime.task import Task, TaskState

if TYPE_CHECKING:
    from weirflow.runtime.worker import CoordinatorSession

log = logging.getLogger("weirflow.worker")

_ENDED = (TaskState.ENDING, TaskState.FINISHED)
# how often the sources' split lag is sampled for the heartbeats (ms): each sample may
# ask the source's system for its ends
_LAG_EVERY_MS = 500


class CoordinatorLostError(WeirflowError):
    """The coordinator's connection broke or it fell silent past the heartbeat timeout."""

    retriable = True


class Lost:
    """Put on the control queue when the coordinator's connection ends."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Deployment:
    """One attempt's subtasks in this worker."""

    def __init__(self, session: CoordinatorSession, deploy: control.Deploy) -> None:
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
        # replaced whole on the scheduler thread, read by the heartbeat thread
        self.split_lag: dict[str, int] = {}
        self._lag_sampled_ms = 0

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
            options = d.options.build()
            restored = None
            manifest = None
            if d.checkpoint_dir is not None:
                if d.storage_probe is not None:
                    check_probe(d.checkpoint_dir, graph.name, d.storage_probe)
                self.storage = open_job_storage(
                    CheckpointConfig(storage=d.checkpoint_dir), graph.name
                )
                if d.restore is not None:
                    local = local_copies_of(options.state_backend, graph.name)
                    self.storage.set_local_verifier(local_verifier(local))
                    manifest = fit_to_job(
                        self.storage.load_savepoint(d.restore), graph, d.allow_non_restored_state
                    )
                    restored = plan_restore(
                        manifest, self.storage, graph, d.parallelism, d.max_parallelism, local
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
            if options.tracing:
                configure_from_env()
            try:
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
                    remote=RemoteEnds(d.owners, w.worker_id, plane),
                )
            finally:
                discard_downloads(restored)
            if manifest is not None and self.storage is not None:
                in_flight = plan_in_flight(
                    manifest, self.storage, d.parallelism, [t.name for t in built.tasks], graph
                )
                for task in built.tasks:
                    if task.name in in_flight:
                        task.replay(in_flight[task.name])
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

    def _sample_lag(self) -> dict[str, int]:
        """``"<operator>/<split>"`` → records not read yet, of the source subtasks whose
        reader :class:`~weirflow.connectors.ReportsLag` (on the scheduler thread, which owns
        the readers)."""
        out: dict[str, int] = {}
        for task in self.tasks:
            for op in task.chain:
                reader = op.reader if isinstance(op, SourceLogic) else None
                if isinstance(reader, ReportsLag):
                    out.update((f"{op.name}/{split}", n) for split, n in reader.lag().items())
        return out

    def connector_sample(self) -> dict[str, dict[int, control.ConnectorReport]]:
        """Per-subtask connector reports, read from the heartbeat thread (their stats are
        copied safely across threads)."""
        out: dict[str, dict[int, control.ConnectorReport]] = {}
        for task in list(self.tasks):
            for op in task.chain:
                stats = op.connector_stats() if isinstance(op, ReportsConnectorStats) else None
                if stats is not None:
                    out.setdefault(op.name, {})[task.subtask] = control.ConnectorReport(
                        stats.breaker,
                        stats.retries,
                        stats.rows_written,
                        stats.rejected,
                        stats.transactions,
                        stats.transaction_s,
                    )
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
        if now_ms - self._lag_sampled_ms >= _LAG_EVERY_MS:
            self._lag_sampled_ms = now_ms
            self.split_lag = self._sample_lag()
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
        if isinstance(message, Lost):
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
            message.checkpoint_id,
            message.timestamp_ms,
            aligned=message.savepoint or self.deploy.mode == "exactly_once",
            unaligned_after_ms=None if message.savepoint else self.deploy.unaligned_after_ms,
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
        submit_when_captured(
            task.capture_of(checkpoint_id),
            snap,
            lambda s: self.writer.submit(self._write_and_acknowledge, checkpoint_id, s),
        )

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


class RemoteEnds:
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


def check_probe(checkpoint_dir: str, job: str, token: str) -> None:
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
