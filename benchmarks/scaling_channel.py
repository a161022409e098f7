"""One cross-process channel alone: records/s through two DataPlane ends over loopback TCP.

A sender process and a receiver process (``multiprocessing`` spawn) open one
connection with the data plane's real handshake
(:func:`weirflow.runtime.wire.dial` / :func:`~weirflow.runtime.wire.authenticate_listener`
on a job secret), wrap it in a :class:`~weirflow.runtime.dataplane.PeerLink`
each, and move ``n`` small tuples ``(int, str, int)`` with event timestamps in
buffers of ``buffer_size`` records over one channel holding ``capacity``
buffers of credit, as a ``key_by`` edge between two workers does. Both ends
follow the worker's loop: pump, and sleep 1 ms when a round moved nothing
(``spin=True`` never sleeps). Throughput is ``n`` over the time from the
sender's first buffer to the receiver's end-of-partition (one monotonic clock
for the machine).

Usage: python benchmarks/scaling_channel.py [--records N] [--spin]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import NamedTuple

from weirflow.runtime.dataplane import DataPlane, PeerLink
from weirflow.runtime.events import END_OF_PARTITION, Batch, EndOfPartition
from weirflow.runtime.wire import FramedConnection, authenticate_listener, dial, new_secret

BUFFER_SIZE = 1024
"""Records per buffer (the runtime's default ``buffer_size``)."""
CAPACITY = 4
"""Buffers of credit per channel (the runtime's default ``channel_capacity``)."""
IDLE_SLEEP_S = 0.001
"""What a worker sleeps after a round that moved nothing."""


class ChannelRun(NamedTuple):
    """One channel measurement.

    Attributes:
        records: records received (must equal those sent).
        seconds: first buffer sent → end-of-partition received, s.
        frames: frames the receiver got (items and credits of one round each).
        spin: whether both ends spun instead of sleeping when idle.
    """

    records: int
    seconds: float
    frames: int
    spin: bool

    @property
    def records_per_s(self) -> float:
        """Records per second."""
        return self.records / self.seconds


def _receive(secret: bytes, capacity: int, spin: bool, out: Connection) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    out.send(server.getsockname()[1])
    sock, _ = server.accept()
    authenticate_listener(sock, secret)
    link = PeerLink(FramedConnection(sock, "sender"), "sender")
    plane = DataPlane({"sender": link})
    channel = plane.input(0, capacity, "sender -> receiver", "sender")
    received = 0
    while True:
        moved = plane.pump()
        item = channel.poll()
        while item is not None and type(item) is Batch:
            received += len(item.values)
            item = channel.poll()
        if type(item) is EndOfPartition:
            break
        if not moved and not spin:
            time.sleep(IDLE_SLEEP_S)
    out.send((received, time.monotonic(), link.frames_received))
    plane.close()


def _send(secret: bytes, port: int, n: int, capacity: int, spin: bool, out: Connection) -> None:
    link = PeerLink(dial(f"127.0.0.1:{port}", secret, "receiver"), "receiver")
    plane = DataPlane({"receiver": link})
    channel = plane.output(0, capacity, "sender -> receiver", "receiver")
    values = [(i, f"u{i % 1000}", i % 100) for i in range(BUFFER_SIZE)]
    stamps = list(range(BUFFER_SIZE))
    start = time.monotonic()
    sent = 0
    while sent < n:
        put = False
        while channel.credit() > 0 and sent < n:
            k = min(BUFFER_SIZE, n - sent)
            channel.put(Batch(values[:k], stamps[:k]))
            sent += k
            put = True
        if not plane.pump() and not put and not spin:
            time.sleep(IDLE_SLEEP_S)
    channel.put(END_OF_PARTITION)
    plane.pump()
    out.send(start)
    # stay connected until the receiver has read everything
    out.recv()
    plane.close()


def measure(n: int, spin: bool = False, capacity: int = CAPACITY) -> ChannelRun:
    """Move ``n`` records from a sender process to a receiver process over one channel.

    Args:
        n: records (≥ 1).
        spin: never sleep when idle (the worker sleeps 1 ms).
        capacity: buffers of credit.

    Returns:
        The :class:`ChannelRun`.

    Raises:
        RuntimeError: the receiver got another number of records than was sent.
    """
    ctx = mp.get_context("spawn")
    secret = new_secret()
    recv_here, recv_there = ctx.Pipe()
    send_here, send_there = ctx.Pipe()
    receiver = ctx.Process(target=_receive, args=(secret, capacity, spin, recv_there))
    receiver.start()
    port = recv_here.recv()
    sender = ctx.Process(target=_send, args=(secret, port, n, capacity, spin, send_there))
    sender.start()
    start = send_here.recv()
    received, end, frames = recv_here.recv()
    send_here.send(None)
    sender.join()
    receiver.join()
    if received != n:
        raise RuntimeError(f"channel delivered {received:,} records, {n:,} were sent")
    return ChannelRun(received, end - start, frames, spin)


def main(argv: list[str] | None = None) -> int:
    """Print records/s of one channel, with the worker's idle sleep and spinning."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--spin", action="store_true", help="never sleep when idle")
    args = parser.parse_args(argv)
    r = measure(args.records, args.spin)
    print(
        f"{r.records:,} records in {r.seconds:.2f} s: {r.records_per_s:,.0f} records/s, "
        f"{r.frames:,} frames received"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
