"""``weirflow run JOB.py --coordinator HOST:PORT``: submit a job to a running coordinator.

The submission (:class:`~weirflow.runtime.control.Submit`) carries all that
the job needs beyond its file: checkpoints, guarantee, restore, restart
strategy, its runtime options (state backend and its folder, tracing, the
startup ramp), its ``--alert`` rules and its ``--autoscale`` bounds. The
coordinator hands the runtime options on to every worker that runs a subtask
of the job, and evaluates the alert rules and the autoscale policy on its
view of the job (the workers' heartbeats), as a coordinator in ``weirflow run
--workers N`` does: a rescale stops the job with a stop checkpoint and runs
it again from there at the new parallelism, within the slots the cluster's
workers offer (a scale-up with no slot to grow into is logged and skipped).

The connection to the coordinator is authenticated, not encrypted: an
``--alert-webhook`` URL (which may hold a token) crosses it as it is, as
everything else of the job does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any

from weirflow.checkpoint import CheckpointConfig
from weirflow.cli.cluster import absolute_job_spec, dial_coordinator
from weirflow.cli.run_options import Guarantee
from weirflow.cli.run_surfaces import alert_rules
from weirflow.cli.savepoints import this_launch
from weirflow.errors import ConfigError, JobFailedError
from weirflow.records import JobResult, OperatorCounts
from weirflow.runtime import RuntimeOptions, control
from weirflow.runtime.restart import RestartStrategy
from weirflow.runtime.wire import ConnectionClosedError, PeerAuthenticationError

log = logging.getLogger("weirflow.cli")


def submission(
    job: str,
    parallelism: int,
    checkpoint: CheckpointConfig | None,
    guarantee: Guarantee,
    restore: str | None,
    restart: RestartStrategy,
    runtime: RuntimeOptions,
    surfaces: dict[str, Any],
) -> control.Submit:
    """The :class:`~weirflow.runtime.control.Submit` of ``weirflow run``'s options.

    Args:
        job: ``JOB.py[:NAME]`` (made absolute: the coordinator and workers import it).
        parallelism: subtasks per operator.
        checkpoint: checkpoint configuration, or ``None``.
        guarantee: the delivery guarantee.
        restore: ``--restore``.
        restart: the restart strategy.
        runtime: runtime options (state backend, tracing, ramp).
        surfaces: ``weirflow run``'s surface options (``alerts``, ``alert_webhook``,
            ``alert_every``, and ``autoscale``: an ``AutoscaleConfig`` or ``None``).

    Raises:
        ConfigError: a state backend that cannot be described to workers.
    """
    return control.Submit(
        job=absolute_job_spec(job),
        parallelism=parallelism,
        max_parallelism=128,
        checkpoint=checkpoint,
        guarantee=guarantee.value,
        restore=restore,
        restart=restart,
        launch=this_launch(),
        options=control.RuntimeSpec.of(runtime),
        alerts=alert_rules(surfaces),
        autoscale=surfaces.get("autoscale"),
    )


def submit_job(
    address: str, secret: bytes, submit: control.Submit, stop: threading.Event
) -> JobResult:
    """Submit a job to a running coordinator and follow it to its end.

    Progress lines are logged; SIGTERM or Ctrl-C asks the job to stop: with a
    savepoint into the job's default savepoint folder when it takes checkpoints
    (as under ``weirflow run``'s supervisor), else with a stop checkpoint.

    Args:
        address: the coordinator's ``HOST:PORT``.
        secret: the job's secret.
        submit: the job.
        stop: set by SIGTERM or Ctrl-C, which also ask the job to stop; set at the end
            when the job was stopped otherwise (a stop with a savepoint).

    Returns:
        The job's result.

    Raises:
        ConfigError: the coordinator is unreachable or refuses the secret.
        JobFailedError: the job failed (the coordinator's message).
    """
    try:
        conn = dial_coordinator(address, secret)
    except PeerAuthenticationError as e:
        raise ConfigError(str(e)) from e

    def ask_stop(*_: object) -> None:
        stop.set()
        with contextlib.suppress(ConnectionClosedError):
            conn.send(
                control.encode_message(control.StopJob(savepoint=submit.checkpoint is not None))
            )

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    conn.send(control.encode_message(submit))
    try:
        while True:
            message = control.decode_message(conn.recv())
            if isinstance(message, control.JobEvent):
                log.info("%s", message.text)
            elif isinstance(message, control.JobDone):
                break
    except ConnectionClosedError as e:
        raise JobFailedError(f"lost the coordinator at {address}: {e}") from e
    finally:
        conn.close()
    if not message.ok:
        error = JobFailedError(message.error)
        error.retriable = message.retriable
        raise error
    if message.stopped:
        stop.set()
    return JobResult(
        job=message.job,
        parallelism=submit.parallelism,
        operators={name: OperatorCounts(*v) for name, v in message.counts.items()},
        checkpoints_completed=message.checkpoints_completed,
        restarts=message.restarts,
        duration_ms=message.duration_ms,
    )
