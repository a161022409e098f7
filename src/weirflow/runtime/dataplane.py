"""The data plane: channels between subtasks in different worker processes.

One authenticated connection per pair of workers carries every channel
between them (Flink's one connection per pair of task managers). Each
channel keeps its own credit, granted by the receiver, so a slow channel
never stalls the others on the same connection.

* The sending end is a :class:`RemoteOutputChannel`: to a record writer it
  looks like a local :class:`~weirflow.runtime.channel.Channel` whose
  ``buffered_buffers`` counts the buffers sent but not yet credited back.
* The receiving end is a :class:`RemoteInputChannel`, a local channel fed
  from the connection; it grants the sender one credit per freed buffer.
* Items (batches, barriers, watermarks, end-of-partition) travel in order,
  pickled (protocol 5) together with the credits of one scheduler round in
  one frame. A reader thread per connection receives and unpickles frames —
  only after the handshake proved the peer holds the job's secret — and the
  scheduler thread delivers them into the channels once per round
  (:meth:`DataPlane.pump`), so channels and tasks stay single-threaded.

Invariant (credit): per channel, buffers sent − credits granted back ≤ the
receiver's capacity, so a receiver never holds more than ``capacity``
buffers of a channel, exactly as with a local channel.
"""

from __future__ import annotations

import pickle
import threading
from collections import deque
from typing import Any

from weirflow.runtime.channel import Channel
from weirflow.runtime.events import Batch
from weirflow.runtime.wire import ConnectionClosedError, FramedConnection

_PROTOCOL = 5


class PeerLink:
    """The one connection to a peer worker, with its reader thread.

    Args:
        conn: the authenticated connection.
        peer: the peer's worker id (for errors).
    """

    def __init__(self, conn: FramedConnection, peer: str) -> None:
        self.conn = conn
        self.peer = peer
        self.inbox: deque[tuple[list[tuple[int, Any]], list[tuple[int, int]]]] = deque()
        self.error: BaseException | None = None
        self.out_items: list[tuple[int, Any]] = []
        self.out_credits: list[tuple[int, int]] = []
        self.frames_sent = 0
        self.frames_received = 0
        self._reader = threading.Thread(
            target=self._read, name=f"weirflow-data-{peer}", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                frame = self.conn.recv()
                # Only an authenticated peer of this attempt reaches here (see wire).
                self.inbox.append(pickle.loads(frame))
                self.frames_received += 1
        except BaseException as e:
            self.error = e

    def flush(self) -> None:
        """Send this round's items and credits as one frame (nothing when there are none).

        Raises:
            ConnectionClosedError: the connection broke.
        """
        if not self.out_items and not self.out_credits:
            return
        frame = pickle.dumps((self.out_items, self.out_credits), protocol=_PROTOCOL)
        self.out_items = []
        self.out_credits = []
        self.conn.send(frame)
        self.frames_sent += 1

    def close(self) -> None:
        """Close the connection (the reader thread ends)."""
        self.conn.close()


class RemoteOutputChannel:
    """The sending end of a channel whose receiver runs in another worker.

    Args:
        channel_id: the channel's id, the same in both workers.
        capacity: the receiver's capacity in buffers (its initial credit).
        name: for logs and errors.
        link: the connection to the receiver's worker.
    """

    __slots__ = ("buffered_buffers", "buffered_records", "capacity", "channel_id", "link", "name")

    def __init__(self, channel_id: int, capacity: int, name: str, link: PeerLink) -> None:
        self.channel_id = channel_id
        self.capacity = capacity
        self.name = name
        self.link = link
        self.buffered_buffers = 0
        self.buffered_records = 0

    def credit(self) -> int:
        """Return how many more buffers the receiver accepts now."""
        return self.capacity - self.buffered_buffers

    def put(self, item: object) -> None:
        """Queue a buffer (the caller holds credit) or a control event for the next flush.

        Raises:
            RuntimeError: a buffer was put without credit (a runtime bug).
        """
        if type(item) is Batch:
            if self.buffered_buffers >= self.capacity:
                raise RuntimeError(f"channel {self.name} overrun: a buffer was sent without credit")
            self.buffered_buffers += 1
        self.link.out_items.append((self.channel_id, item))

    def grant(self, credits: int) -> None:
        """The receiver freed ``credits`` buffers."""
        self.buffered_buffers -= credits

    def poll(self) -> object | None:
        """A sending end has nothing to read."""
        return None

    def __len__(self) -> int:
        return 0


class RemoteInputChannel(Channel):
    """The receiving end of a channel whose sender runs in another worker.

    Args:
        channel_id: the channel's id, the same in both workers.
        capacity: buffers it holds (the sender's initial credit).
        name: for logs and errors.
        link: the connection to the sender's worker.
    """

    __slots__ = ("channel_id", "granted", "link", "received")

    def __init__(self, channel_id: int, capacity: int, name: str, link: PeerLink) -> None:
        super().__init__(capacity, name)
        self.channel_id = channel_id
        self.link = link
        self.granted = capacity
        self.received = 0

    def deliver(self, item: object) -> None:
        """Put an item that arrived from the sender."""
        if type(item) is Batch:
            self.received += 1
        self.put(item)

    def grant_credit(self) -> None:
        """Queue credit for every buffer freed since the last grant."""
        free = self.capacity - self.buffered_buffers - (self.granted - self.received)
        if free > 0:
            self.granted += free
            self.link.out_credits.append((self.channel_id, free))


class DataPlane:
    """A worker's remote channels of one attempt, and the links they travel on.

    Args:
        links: peer worker id → its link.
    """

    def __init__(self, links: dict[str, PeerLink]) -> None:
        self.links = links
        self.inputs: dict[int, RemoteInputChannel] = {}
        self.outputs: dict[int, RemoteOutputChannel] = {}

    def output(self, channel_id: int, capacity: int, name: str, peer: str) -> RemoteOutputChannel:
        """Create the sending end of channel ``channel_id`` towards worker ``peer``."""
        ch = RemoteOutputChannel(channel_id, capacity, name, self.links[peer])
        self.outputs[channel_id] = ch
        return ch

    def input(self, channel_id: int, capacity: int, name: str, peer: str) -> RemoteInputChannel:
        """Create the receiving end of channel ``channel_id`` from worker ``peer``."""
        ch = RemoteInputChannel(channel_id, capacity, name, self.links[peer])
        self.inputs[channel_id] = ch
        return ch

    def pump(self) -> bool:
        """Deliver what arrived, grant freed credit, send what was queued (scheduler thread).

        Returns:
            Whether anything arrived.

        Raises:
            ConnectionClosedError: a link broke (the attempt fails).
            KeyError: a peer named a channel this worker does not have (a bug).
        """
        arrived = False
        inputs, outputs = self.inputs, self.outputs
        for link in self.links.values():
            inbox = link.inbox
            while inbox:
                items, credits = inbox.popleft()
                arrived = True
                for channel_id, item in items:
                    inputs[channel_id].deliver(item)
                for channel_id, n in credits:
                    outputs[channel_id].grant(n)
            if link.error is not None:
                raise ConnectionClosedError(
                    f"the data connection to worker {link.peer} broke: {link.error}"
                )
        for ch in inputs.values():
            ch.grant_credit()
        for link in self.links.values():
            link.flush()
        return arrived

    def close(self) -> None:
        """Close every link."""
        for link in self.links.values():
            link.close()
