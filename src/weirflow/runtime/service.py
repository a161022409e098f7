"""``weirflow coordinator``'s service: run the jobs that clients submit.

A client (``weirflow run JOB.py --coordinator HOST:PORT``) opens an
authenticated connection, sends :class:`~weirflow.runtime.control.Submit`,
receives :class:`~weirflow.runtime.control.JobEvent` progress lines, and at
the end one :class:`~weirflow.runtime.control.JobDone`. A
:class:`~weirflow.runtime.control.StopJob` stops the job with a savepoint
when it asks for one (SIGTERM to the client of a job with checkpoints), else
with a stop checkpoint, as the client going away does. Jobs run one at a time,
each with the runtime options its submission carries (state backend, tracing,
ramp), which every worker of the job receives with its deployment, watched
by what the caller makes of the submission (the CLI: its alert rules), and
run by the caller's :data:`SubmittedRun` (the CLI: once, or once per
parallelism with ``--autoscale``).

A job with checkpoints gets a control endpoint
(:class:`~weirflow.runtime.endpoint.ControlEndpoint`) on this host while it
runs, as one started by ``weirflow run`` does: ``weirflow savepoint``,
``stop --savepoint`` and ``rescale`` reach it by the job's name and
checkpoint storage.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import msgspec

from weirflow.errors import WeirflowError
from weirflow.graph import LogicalGraph
from weirflow.records import JobResult
from weirflow.runtime import control
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.coordinator import JobCoordinator, JobSpec
from weirflow.runtime.endpoint import ControlEndpoint, Launch
from weirflow.runtime.launched import CoordinatorWatch
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.runtime.wire import ConnectionClosedError, FramedConnection

#: What watches the coordinator while a submitted job runs (its alert rules), or ``None``.
SubmittedWatch = Callable[[control.Submit, LogicalGraph], CoordinatorWatch | None]
#: One run of a job: its spec, and what watches the coordinator during that run.
OneRun = Callable[[JobSpec, CoordinatorWatch | None], JobResult]
#: Runs a submitted job to its end through one or more :data:`OneRun` calls, given the
#: submission, its spec, the watch, the job's stop event and its savepoint requests.
SubmittedRun = Callable[
    [control.Submit, JobSpec, OneRun, CoordinatorWatch | None, threading.Event, SavepointRequests],
    JobResult,
]


def serve(
    coordinator: JobCoordinator,
    load_graph: Callable[[str], LogicalGraph],
    watch_for: SubmittedWatch | None,
    run_submitted: SubmittedRun,
) -> None:
    """Run the jobs that clients submit, one after another, until the coordinator closes.

    Args:
        coordinator: a started coordinator.
        load_graph: ``JOB.py[:NAME]`` → its logical graph (the job file
            must be importable here as on every worker).
        watch_for: given each submission and its graph, what watches the coordinator
            while that job runs (started before each run, ended after it).
        run_submitted: runs each submitted job through one or more runs.
    """
    while not coordinator.closed:
        try:
            submit, client = coordinator.submissions.get(timeout=0.2)
        except queue.Empty:
            coordinator.drain_membership()
            continue
        _run_submitted(coordinator, submit, client, load_graph, watch_for, run_submitted)


def _run_submitted(
    coordinator: JobCoordinator,
    submit: control.Submit,
    client: FramedConnection,
    load_graph: Callable[[str], LogicalGraph],
    watch_for: SubmittedWatch | None,
    run_submitted: SubmittedRun,
) -> None:
    stop = threading.Event()
    savepoints = SavepointRequests()
    listener = _ClientListener(client)

    def watch_client() -> None:
        # A StopJob stops the job with a savepoint when it asks for one and the job takes
        # checkpoints, as SIGTERM to `weirflow run` does; else, and when the client goes
        # away, with a stop checkpoint.
        try:
            message = control.decode_message(client.recv())
            while not isinstance(message, control.StopJob):
                message = control.decode_message(client.recv())
        except (ConnectionClosedError, msgspec.DecodeError):
            stop.set()
            return
        if message.savepoint and submit.checkpoint is not None:
            savepoints.submit(None, stop=True).add_done_callback(listener.stop_savepoint_done)
        else:
            stop.set()

    threading.Thread(target=watch_client, name="weirflow-client", daemon=True).start()
    try:
        spec = JobSpec(
            job=submit.job,
            graph=load_graph(submit.job),
            parallelism=submit.parallelism,
            max_parallelism=submit.max_parallelism,
            checkpoint=submit.checkpoint,
            guarantee=submit.guarantee,
            restore=submit.restore,
            restart=submit.restart,
            options=submit.options.build(),
        )
        watch = watch_for(submit, spec.graph) if watch_for is not None else None
        endpoint = _endpoint(savepoints, submit, spec.graph.name)

        def one_run(spec: JobSpec, watch: CoordinatorWatch | None) -> JobResult:
            unwatch = watch(coordinator) if watch is not None else None
            try:
                return coordinator.run(spec, stop=stop, listener=listener, savepoints=savepoints)
            finally:
                if unwatch is not None:
                    unwatch()

        try:
            result = run_submitted(submit, spec, one_run, watch, stop, savepoints)
        finally:
            if endpoint is not None:
                endpoint.close()
        done = control.JobDone(
            ok=True,
            job=result.job,
            counts={name: list(c) for name, c in result.operators.items()},
            checkpoints_completed=result.checkpoints_completed,
            restarts=result.restarts,
            duration_ms=result.duration_ms,
            stopped=stop.is_set() or savepoints.stop_submitted,
        )
    except WeirflowError as e:
        done = control.JobDone(ok=False, error=str(e), retriable=e.retriable)
    except Exception as e:
        done = control.JobDone(ok=False, error=f"{type(e).__name__}: {e}", retriable=True)
    with contextlib.suppress(ConnectionClosedError):
        client.send(control.encode_message(done))
    client.close()
    coordinator.spec = None


def _endpoint(
    savepoints: SavepointRequests, submit: control.Submit, job: str
) -> ControlEndpoint | None:
    if submit.checkpoint is None:
        return None
    # the submitting client's process may live on another host: the answer to a stop,
    # which comes when the run ended, is what a stop waits for
    argv, cwd = (submit.launch.argv, submit.launch.cwd) if submit.launch else ([], "")
    endpoint = ControlEndpoint(
        savepoints, submit.checkpoint.storage, job, Launch(argv, cwd, pid=None)
    )
    endpoint.start()
    return endpoint


class _ClientListener(RunListener):
    """Sends a submitted job's progress to the client that submitted it."""

    def __init__(self, client: FramedConnection) -> None:
        self.client = client

    def _say(self, text: str) -> None:
        with contextlib.suppress(ConnectionClosedError):
            self.client.send(control.encode_message(control.JobEvent(text)))

    def stop_savepoint_done(self, done: Future[str]) -> None:
        """Tell the client where the stop savepoint went, or why there is none."""
        error = done.exception()
        self._say(
            f"stop savepoint written to {done.result()}"
            if error is None
            else f"no stop savepoint: {error}"
        )

    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        where = f"checkpoint {restored_from}" if restored_from is not None else "a fresh start"
        self._say(f"attempt {attempt + 1} starting from {where}")

    def checkpoint_completed(self, completed: Any) -> None:
        m = completed.manifest
        self._say(f"checkpoint {m.checkpoint_id} completed ({m.duration_ms} ms, {m.size} bytes)")

    def attempt_failed(self, attempt: int, error: BaseException, wait_ms: int | None) -> None:
        then = f"restarting in {wait_ms} ms" if wait_ms is not None else "not restarting"
        self._say(f"attempt {attempt} failed: {error}; {then}")
