"""A bound on one database call: cut the connection of a call that overruns.

libpq waits on its socket without a bound. A server that stops answering
while its kernel keeps the TCP link alive (a SIGSTOPped or hung process, a
full disk stalling a commit) would block the sink, and with it the whole
task, forever. A :class:`CallDeadline` watches each call from one daemon
thread; when a call overruns, it shuts the call's socket down, so libpq
returns a lost-connection error that the retry loop and the circuit breaker
treat like any outage. Whether the cut call took effect on the server is
then unknown; every caller's transaction is written so that running it
again is safe (see ``writers.py``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("weirflow.connectors.postgres")


class CallDeadline:
    """Cuts the connection of a call running longer than ``timeout_s`` (module docstring).

    Args:
        name: the writer's name, for the log line and the thread name.
        timeout_s: longest call in seconds (> 0).
    """

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._deadline: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def armed(self, conn: Any) -> Iterator[None]:
        """Watch the call made inside the ``with`` block on ``conn`` (a psycopg connection)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name=f"weirflow-deadline-{self.name}", daemon=True
                )
                self._thread.start()
            self._fd = conn.pgconn.socket
            self._deadline = time.monotonic() + self.timeout_s
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._fd = self._deadline = None

    def close(self) -> None:
        """Stop the watching thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None or self._fd is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                # The socket stays owned by the connection: shut it down, never close it.
                cut = socket.socket(fileno=self._fd)
                try:
                    cut.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                finally:
                    cut.detach()
                log.warning(
                    "%s: a database call ran over %.1f s; its connection was cut",
                    self.name,
                    self.timeout_s,
                )
                self._fd = self._deadline = None
