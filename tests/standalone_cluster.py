"""A standalone cluster on loopback for tests: a `weirflow coordinator` and `weirflow worker`
processes joining it, as a user starts them by hand, all logging to one file."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from weirflow.testing.hosts import write_token

CLI = [sys.executable, "-m", "weirflow.cli"]


class StandaloneCluster:
    """The processes of a started cluster.

    Attributes:
        join: the options that reach the coordinator (``--coordinator``, ``--token-file``),
            for ``weirflow run`` and ``weirflow worker``.
        log: the file every process of the cluster logs to.
        out: that file, open for writing (a client may log into it too).
        coordinator: the coordinator's process.
        workers: the worker processes, in the order they were started.
    """

    def __init__(self, folder: Path, env: dict[str, str], slots: int, *coordinator_args: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{s.getsockname()[1]}"
        token = write_token(folder / "token")
        self.join = ["--coordinator", address, "--token-file", str(token)]
        self.log = folder / "cluster.log"
        self.out = open(self.log, "wb")  # noqa: SIM115 - open for the cluster's life
        self._env = env
        self._slots = slots
        self.coordinator = self._start(
            "coordinator", "--listen", address, "--token-file", str(token), *coordinator_args
        )
        self.workers: list[subprocess.Popen[bytes]] = []

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*CLI, *args], env=self._env, stdout=self.out, stderr=self.out)

    def text(self) -> str:
        """What the cluster logged so far."""
        return self.log.read_text(errors="replace")

    def start_worker(self, timeout_s: float = 60) -> subprocess.Popen[bytes]:
        """Start one more worker and wait until the coordinator logged that it joined."""
        joined = self.text().count(" joined")
        worker = self._start("worker", *self.join, f"--slots={self._slots}")
        self.workers.append(worker)
        deadline = time.monotonic() + timeout_s
        while self.text().count(" joined") <= joined:
            assert time.monotonic() < deadline, f"no worker joined:\n{self.text()[-3000:]}"
            assert worker.poll() is None, f"the worker exited:\n{self.text()[-3000:]}"
            time.sleep(0.05)
        return worker

    def close(self) -> None:
        """End every process still running (SIGTERM, then SIGKILL after 30 s)."""
        for proc in [*self.workers, self.coordinator]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.coordinator]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.out.close()


@contextlib.contextmanager
def standalone_cluster(
    folder: Path, env: dict[str, str], workers: int, slots: int = 1, *coordinator_args: str
) -> Iterator[StandaloneCluster]:
    """A coordinator and ``workers`` joined workers of ``slots`` slots each, logging to
    ``folder/cluster.log``; every process ends with the block."""
    cluster = StandaloneCluster(folder, env, slots, *coordinator_args)
    try:
        for _ in range(workers):
            cluster.start_worker()
        yield cluster
    finally:
        cluster.close()
