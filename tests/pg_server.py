"""A private PostgreSQL 15 server for tests that stop, pause or reconfigure it.

Started from the machine's binaries (``initdb``, ``pg_ctl``) as the
unprivileged user ``nobody`` (PostgreSQL refuses to run as root), with its
data folder in a temporary directory, listening on a free loopback port and
its own socket folder, with ``max_prepared_transactions`` set. Always
stopped and removed by the fixture that made it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One private server (see the module docstring).

    Attributes:
        port: its loopback port.
        dsn: a libpq connection string for database ``postgres``.
    """

    def __init__(self, root: Path, user: str = "nobody") -> None:
        self.root = root
        self.data = root / "data"
        self.user = pwd.getpwnam(user)
        self.port = _free_port()
        self.dsn = f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            list(args),
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            cwd=self.root,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            capture_output=True,
            check=check,
            timeout=60,
        )

    def init(self) -> None:
        """``initdb`` with trust authentication and superuser ``postgres``."""
        initdb = str(BIN / "initdb")
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    def start(self) -> None:
        """``pg_ctl start`` on the loopback port, prepared transactions on, fsync off."""
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_prepared_transactions=20 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(BIN / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (``immediate`` is a crash without a shutdown checkpoint)."""
        self._run(str(BIN / "pg_ctl"), "stop", "-w", "-D", str(self.data), "-m", mode, check=False)

    def postmaster_pid(self) -> int:
        """The postmaster's process id."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def pause(self) -> None:
        """SIGSTOP the postmaster and every server process (the server stops answering)."""
        for pid in self._server_pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        for pid in self._server_pids():
            os.kill(pid, signal.SIGCONT)

    def _server_pids(self) -> list[int]:
        master = self.postmaster_pid()
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True, check=False
        ).stdout
        return [master, *(int(p) for p in out.split())]


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[PgServer]:
    """A private server for the whole session; skipped without the binaries."""
    if not (BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed")
    root = Path(tempfile.mkdtemp(prefix="wf-pg-"))
    server = PgServer(root)
    os.chown(root, server.user.pw_uid, server.user.pw_gid)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(OSError, ValueError):
            server.resume()
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``predicate`` every 50 ms until true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


def copy_backends(dsn: str, app: str) -> list[tuple[int, str]]:
    """``(pid, query)`` of the server's backends named ``app`` (``application_name``) that
    run a ``COPY``: a sink's open stream."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s "
            "AND query LIKE 'COPY%%'",
            (app,),
        ).fetchall()


def terminate_backend(dsn: str, pid: int) -> None:
    """End one server backend (``pg_terminate_backend``): its client's link breaks."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
