"""Launchers: what starts worker processes for a coordinator.

The coordinator asks its launcher to start workers, to replace the ones
that exited, and to release a worker it gave up on. Nothing below the
launcher knows which launcher started it: a worker only knows the
coordinator's address and the job's secret.

:class:`LocalLauncher` starts ``weirflow worker`` processes on this machine
(``weirflow run --workers N``). They die with the coordinator's process
(``PR_SET_PDEATHSIG``), and the secret reaches them in their environment,
never on a command line (which every user of the machine can read).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("weirflow.launcher")

SECRET_ENV = "WEIRFLOW_CLUSTER_SECRET"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LostProcess:
    """A worker process that its launcher knows is gone before its connections tell.

    A crashed machine closes no connection: without this report the
    coordinator would learn of the loss only from the heartbeat timeout.

    Attributes:
        pid: the worker's process id.
        host: the address the worker's data plane binds (its machine's address).
        reason: why it is gone, for the coordinator's log and the attempt's failure.
    """

    pid: int
    host: str
    reason: str


class Launcher(Protocol):
    """Starts and replaces workers for a coordinator."""

    def watch(self, report: Callable[[LostProcess], None]) -> None:
        """Call ``report`` (from any thread) for each worker the launcher learns is lost.

        Called once, before :meth:`start`.
        """
        ...

    def start(self, coordinator: str) -> None:
        """Start the initial workers, which dial ``coordinator`` (``HOST:PORT``)."""
        ...

    def replace_exited(self) -> int:
        """Start a new worker for each one that exited; return how many were started."""
        ...

    def release(self, pid: int) -> None:
        """The coordinator gave up on the worker with process id ``pid``: end it if ours."""
        ...

    def close(self, grace_s: float = 5.0) -> None:
        """Let the workers exit for ``grace_s`` seconds, then end the rest."""
        ...


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalLauncher:
    """Starts ``workers`` worker processes with ``slots`` slots each on this machine.

    Args:
        workers: number of worker processes, ≥ 1.
        slots: slots per worker, ≥ 1.
        secret: the job's secret.
        extra_args: further ``weirflow worker`` options.
    """

    def __init__(self, workers: int, slots: int, secret: bytes, extra_args: list[str]) -> None:
        self.workers = workers
        self.slots = slots
        self.secret = secret
        self.extra_args = extra_args
        self.processes: list[subprocess.Popen[bytes]] = []
        self._coordinator = ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, SECRET_ENV: self.secret.hex()}
        cmd = [
            sys.executable,
            "-m",
            "weirflow.cli",
            "worker",
            "--coordinator",
            self._coordinator,
            "--slots",
            str(self.slots),
            "--exit-on-loss",
            *self.extra_args,
        ]
        # PDEATHSIG fires when the spawning thread ends: the coordinator spawns from its
        # main thread, which lives as long as the job.
        return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)

    def watch(self, report: Callable[[LostProcess], None]) -> None:
        """Nothing to report: a local worker's exit closes its connections at once."""

    def start(self, coordinator: str) -> None:
        """Start the workers."""
        self._coordinator = coordinator
        self.processes = [self._spawn() for _ in range(self.workers)]

    def replace_exited(self) -> int:
        """Start a new process for every worker process that exited."""
        started = 0
        for k, proc in enumerate(self.processes):
            if proc.poll() is not None:
                log.warning(
                    "worker process %d exited (%s); starting another", proc.pid, proc.returncode
                )
                self.processes[k] = self._spawn()
                started += 1
        return started

    def release(self, pid: int) -> None:
        """SIGKILL our worker ``pid`` (a paused or cut-off worker is of no more use)."""
        for proc in self.processes:
            if proc.pid == pid and proc.poll() is None:
                proc.kill()
                proc.wait()

    def close(self, grace_s: float = 5.0) -> None:
        """Wait up to ``grace_s`` seconds for the workers to exit, then SIGKILL the rest."""
        for proc in self.processes:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
