"""The worker side of ``weirflow run``: the process the supervisor starts and restarts.

It dies with its supervisor (``PR_SET_PDEATHSIG``), runs the job in this
process with its metrics, dashboard and alert surfaces, and logs each attempt
and completed checkpoint.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from typing import Any

from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig
from weirflow.cli.run_autoscale import Autoscaler
from weirflow.cli.run_options import Guarantee, LogFormat
from weirflow.cli.run_surfaces import Surfaces, make_observer, print_summary
from weirflow.cli.savepoints import job_endpoint, stop_with_savepoint_on_signal
from weirflow.metrics import JsonFormatter
from weirflow.metrics.autoscale import AutoscaleConfig
from weirflow.runtime import RunListener, RuntimeOptions, in_flight_items, wall_clock_ms
from weirflow.runtime.run import run_job

_PR_SET_PDEATHSIG = 1
log = logging.getLogger("weirflow.cli")


class PrintingListener(RunListener):
    """Logs each attempt's start and each completed checkpoint (with its in-flight buffers)."""

    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        where = f"checkpoint {restored_from}" if restored_from is not None else "a fresh start"
        log.info("worker %d: starting from %s", os.getpid(), where)

    def checkpoint_completed(self, completed: Any) -> None:
        m = completed.manifest
        in_flight = in_flight_items(m)
        log.info(
            "checkpoint %d completed (%d ms, %d bytes)%s",
            m.checkpoint_id,
            m.duration_ms,
            m.size,
            f" with {in_flight} in-flight buffers" if in_flight else "",
        )


def configure_logging(log_format: LogFormat) -> None:
    """Log at INFO to stderr: plain text lines, or one JSON object per line."""
    if log_format is LogFormat.json:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the supervisor) dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="weirflow-parent-watch").start()


def run_worker(
    job: str,
    parallelism: int,
    config: CheckpointConfig | None,
    guarantee: Guarantee,
    restore: str | None,
    surfaces: dict[str, Any],
    autoscale: AutoscaleConfig | None,
    runtime: RuntimeOptions,
) -> int:
    """Run the job in this worker process (``weirflow run --worker``) until it ends or stops.

    Args:
        job: ``JOB.py[:NAME]``.
        parallelism: subtasks per operator.
        config: checkpoints; ``None`` runs without (``at_most_once``).
        guarantee: the mode without checkpoints.
        restore: what to restore (see :func:`~weirflow.cli.run_options.restore_option`).
        surfaces: the metrics, dashboard, alert and log settings of
            :class:`~weirflow.cli.run_surfaces.Surfaces`.
        autoscale: rescale on lag, or ``None``.
        runtime: the state backend, buffer sizes and the startup ramp.

    Returns:
        The exit status: 0 (finished, or stopped with a final checkpoint).

    Raises:
        WeirflowError: the job failed (the supervisor decides about a restart).
    """
    started_ms = wall_clock_ms()
    _die_with_parent()
    stop = threading.Event()
    flow = load_dataflow(job)
    savepoints = stop_with_savepoint_on_signal(stop, config is not None)
    observer = make_observer(flow, parallelism, started_ms, PrintingListener())
    if autoscale is not None:
        Autoscaler(
            autoscale, parallelism, observer.status, observer.metrics, wall_clock_ms, stop
        ).start()
    shown = Surfaces(observer, **surfaces)
    endpoint = job_endpoint(savepoints, config, flow.name)
    try:
        if config is None:
            result = run_job(
                flow.graph,
                parallelism,
                128,
                guarantee=guarantee.value,
                stop=stop,
                listener=observer,
                runtime=runtime,
            )
        else:
            result = flow.run(
                parallelism,
                checkpoint=config,
                restore=restore,
                stop=stop,
                listener=observer,
                savepoints=savepoints,
                runtime=runtime,
            )
    finally:
        shown.close()
        if endpoint is not None:
            endpoint.close()
    print_summary(result, surfaces["log_format"], stop.is_set() or savepoints.stop_submitted)
    return 0
