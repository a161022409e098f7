"""Test helper: wait until a connector's circuit breaker opens, then heal the outage."""

from __future__ import annotations

import threading
from collections.abc import Callable

from weirflow.metrics import ConnectorStats


def heal_once_open(
    stats: Callable[[], ConnectorStats | None], heal: Callable[[], None]
) -> tuple[threading.Thread, list[str]]:
    """Start a thread that polls ``stats`` until the breaker is open (at most ~30 s),
    then calls ``heal``, whatever it saw. Event driven: no wait to tune per machine.

    Returns:
        The started thread (join it) and the breaker states it saw, in order.
    """
    seen: list[str] = []

    def watch() -> None:
        try:
            for _ in range(6000):
                now = stats()
                seen.append(now.breaker if now is not None else "none")
                if seen[-1] == "open":
                    return
                threading.Event().wait(0.005)
        finally:
            heal()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, seen
