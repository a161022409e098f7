"""The supervisor of ``weirflow run``: starts the worker, restarts it, and rescales it.

The supervisor starts the worker (``weirflow run ... --worker``) and waits.
When the worker dies or fails, the restart strategy decides whether and when
to start another, restoring the latest completed checkpoint. A worker that
asks for a rescale (``--autoscale``) stops with a final checkpoint, leaves
its decision in the file named by ``WEIRFLOW_AUTOSCALE_FILE`` and exits 0;
the supervisor then starts the next worker at the decided parallelism from
that checkpoint. A rescale is not a failure: the restart strategy does not
count it. The supervisor hands each worker, in its environment, how many
restarts and rescales came before it, so that those metrics survive worker
processes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
from rich.console import Console

from weirflow.checkpoint import CheckpointStorage
from weirflow.metrics import names
from weirflow.runtime import RestartStrategy

EXIT_FAILED = 1
EXIT_CONFIG = 2
# a worker's failure that recurs on every attempt: the supervisor does not restart it
EXIT_NOT_RETRIABLE = 3
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("weirflow.cli")


class RescaleRequest(msgspec.Struct, frozen=True):
    """A worker's rescale decision, left for the supervisor.

    Attributes:
        parallelism: the parallelism to restore at.
        direction: ``up`` or ``down``.
        at_ms: when it was decided (ms since the epoch).
    """

    parallelism: int
    direction: str
    at_ms: int


def write_rescale_request(path: Path, request: RescaleRequest) -> None:
    """Leave ``request`` at ``path`` (atomically: written aside, then renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(request))
    tmp.replace(path)


class _Rescales:
    """The rescales so far, and where the current worker leaves its request."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "rescale.json"
        self.up = 0
        self.down = 0
        self.last_ms = int(time.time() * 1000)

    def env(self) -> dict[str, str]:
        return {
            names.ENV_AUTOSCALE_FILE: str(self.path),
            names.ENV_AUTOSCALE_LAST_MS: str(self.last_ms),
            names.ENV_AUTOSCALE_UP: str(self.up),
            names.ENV_AUTOSCALE_DOWN: str(self.down),
        }

    def take(self) -> RescaleRequest | None:
        """The request the worker left, if any (removed, so that it is taken once)."""
        if not self.path.exists():
            return None
        request = msgspec.json.decode(self.path.read_bytes(), type=RescaleRequest)
        self.path.unlink()
        return request

    def done(self, request: RescaleRequest) -> None:
        """Count a rescale carried out; its time starts the next cool-down."""
        if request.direction == "up":
            self.up += 1
        else:
            self.down += 1
        self.last_ms = request.at_ms


def _with_parallelism(argv: list[str], parallelism: int) -> list[str]:
    return [f"--parallelism={parallelism}" if a.startswith("--parallelism=") else a for a in argv]


def supervise(
    argv: list[str],
    strategy: RestartStrategy,
    storage: CheckpointStorage | None,
    restore: str | None,
    worker_env: dict[str, str] | None = None,
) -> int:
    """Run workers until one finishes or stops, restarting and rescaling as above.

    Args:
        argv: the worker's ``weirflow run`` arguments (holding ``--parallelism=N``).
        strategy: the restart strategy.
        storage: the job's checkpoint storage (``None`` without checkpoints).
        restore: the first worker's ``--restore``.
        worker_env: extra environment for every worker (secrets).

    Returns:
        The exit status: 0 finished or stopped, else ``EXIT_FAILED`` or ``EXIT_CONFIG``.
    """
    tracker = strategy.tracker()
    recovery_ms = 0
    baseline = max(storage.completed_checkpoints(), default=0) if storage else 0
    stopping = threading.Event()
    current: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for p in current:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    attempt = 0
    with tempfile.TemporaryDirectory(prefix="weirflow-supervisor-") as folder:
        rescales = _Rescales(Path(folder))
        while True:
            if stopping.is_set():
                # asked to stop between two workers (a backoff, a rescale): the latest
                # completed checkpoint is where a later run resumes
                return 0
            args = [*argv, "--worker"]
            if restore:
                args += ["--restore", restore]
            started = int(time.time() * 1000)
            env = {
                **os.environ,
                **(worker_env or {}),
                **rescales.env(),
                names.ENV_RESTARTS: str(attempt),
                names.ENV_RECOVERY_MS: str(recovery_ms),
            }
            proc = subprocess.Popen([sys.executable, "-m", "weirflow.cli", "run", *args], env=env)
            current[:] = [proc]
            if stopping.is_set():
                proc.send_signal(signal.SIGTERM)  # the request came while it was starting
            rc = proc.wait()
            died = int(time.time() * 1000)
            request = rescales.take()
            if rc == 0 and request is not None and not stopping.is_set():
                rescales.done(request)
                log.info(
                    "rescaling to parallelism %d from the final checkpoint", request.parallelism
                )
                argv = _with_parallelism(argv, request.parallelism)
                restore = "latest"
                continue
            if rc == 0:
                return 0
            if rc == EXIT_NOT_RETRIABLE:
                # the worker printed why; another attempt would fail the same way
                return EXIT_FAILED
            if rc == EXIT_CONFIG or stopping.is_set():
                return rc if rc > 0 else EXIT_FAILED
            cause = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
            wait_ms = tracker.on_failure(int(time.time() * 1000), started)
            if wait_ms is None:
                err.print(
                    f"[red]error:[/] the worker failed ({cause}) and the restart strategy gives "
                    f"up after {tracker.restarts} restart(s)"
                )
                return EXIT_FAILED
            attempt += 1
            log.warning("worker failed (%s); restart %d in %d ms", cause, attempt, wait_ms)
            stopping.wait(wait_ms / 1000)
            if storage is not None and max(storage.completed_checkpoints(), default=0) > baseline:
                restore = "latest"
            recovery_ms += int(time.time() * 1000) - died
