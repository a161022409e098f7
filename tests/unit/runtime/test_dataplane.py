"""Remote channels: order, per-channel credit, and independence of channels on one connection."""

from __future__ import annotations

import socket
import time

from weirflow.runtime.dataplane import DataPlane, PeerLink
from weirflow.runtime.events import Batch, CheckpointBarrier, EndOfPartition, Watermark
from weirflow.runtime.wire import FramedConnection


def _planes() -> tuple[DataPlane, DataPlane]:
    a, b = socket.socketpair()
    return (
        DataPlane({"b": PeerLink(FramedConnection(a, "b"), "b")}),
        DataPlane({"a": PeerLink(FramedConnection(b, "a"), "a")}),
    )


def _pump_until(plane: DataPlane, ready: object) -> None:
    deadline = time.monotonic() + 5
    while not ready():  # type: ignore[operator]
        plane.pump()
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.001)


def test_items_arrive_in_order_and_credit_bounds_the_receiver() -> None:
    sender, receiver = _planes()
    out = sender.output(7, 2, "x[0/2] -> y[1/2]", "b")
    inp = receiver.input(7, 2, "x[0/2] -> y[1/2]", "a")
    out.put(Batch([1, 2], [10, 11]))
    out.put(Watermark(11))
    out.put(Batch([3], [12]))
    assert out.credit() == 0  # two buffers in flight: the receiver's capacity
    out.put(CheckpointBarrier(1, 0))
    sender.pump()
    _pump_until(receiver, lambda: len(inp) == 4)
    assert inp.buffered_buffers == 2
    receiver.pump()
    sender.pump()
    assert out.credit() == 0, "no credit while the receiver still holds both buffers"
    first = inp.poll()
    assert isinstance(first, Batch) and first.values == [1, 2]
    assert inp.poll() == Watermark(11)
    receiver.pump()
    _pump_until(sender, lambda: out.credit() == 1)
    last = inp.poll()
    assert isinstance(last, Batch) and last.values == [3]
    assert inp.poll() == CheckpointBarrier(1, 0)
    receiver.pump()
    _pump_until(sender, lambda: out.credit() == 2)
    out.put(EndOfPartition())
    sender.pump()
    _pump_until(receiver, lambda: len(inp) == 1)
    assert inp.poll() == EndOfPartition()
    sender.close()
    receiver.close()


def test_a_full_channel_does_not_stall_another_on_the_same_connection() -> None:
    sender, receiver = _planes()
    slow_out = sender.output(1, 1, "slow", "b")
    fast_out = sender.output(2, 1, "fast", "b")
    slow_in = receiver.input(1, 1, "slow", "a")
    fast_in = receiver.input(2, 1, "fast", "a")
    slow_out.put(Batch(["s"], None))
    assert slow_out.credit() == 0
    for k in range(20):
        assert fast_out.credit() == 1, f"the fast channel starved at {k}"
        fast_out.put(Batch([k], None))
        sender.pump()
        _pump_until(receiver, lambda: len(fast_in) == 1)
        got = fast_in.poll()
        assert isinstance(got, Batch) and got.values == [k]
        receiver.pump()
        _pump_until(sender, lambda: fast_out.credit() == 1)
    assert len(slow_in) == 1 and slow_out.credit() == 0
    sender.close()
    receiver.close()
