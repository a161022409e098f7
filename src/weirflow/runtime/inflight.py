"""In-flight data of unaligned checkpoints: what a barrier overtook, captured and replayed.

An unaligned checkpoint (Apache Flink's FLIP-76) lets barrier ``n`` overtake
the records queued ahead of it instead of waiting for them. A task that
takes the first barrier ``n`` snapshots its operators at once, and its
snapshot then also holds the records it has not yet accounted for:

* **output**: the buffers waiting in its record writers that the barrier
  overtook on its way out (the receiver gets them after barrier ``n``, so
  the receiver's snapshot does not hold them);
* **input**: per input channel that has not delivered barrier ``n`` yet,
  every buffer that arrives on it before barrier ``n`` (or before its end
  of partition): the sender emitted it before its own snapshot, and the
  receiver's snapshot was taken before processing it.

Invariant: every record a sender emitted before its snapshot ``n`` is in
exactly one of the receiver's operator state, the receiver's input
in-flight data, or the sender's output in-flight data. So restoring the
operator states and replaying the in-flight data (output re-queued ahead of
new output, input processed ahead of new input) gives exactly-once.

Items are encoded (serde: msgpack, pickle for user objects) when captured,
so that later in-place changes of a record by an operator cannot alter what
the checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from weirflow.checkpoint import Manifest
from weirflow.errors import CheckpointError
from weirflow.runtime.events import Batch, CheckpointBarrier, Watermark
from weirflow.runtime.snapshots import (
    IN_FLIGHT_ITEMS,
    EncodedSnapshot,
    with_channel_state,
)
from weirflow.serde import check_format_version, decode, encode, encode_plain, is_pickled

FORMAT_VERSION = 1
_BATCH = 0
_WATERMARK = 1


def encode_item(item: object) -> bytes:
    """Encode a buffer or watermark of a channel (msgpack, pickle for user objects).

    Raises:
        TypeError: ``item`` is neither a :class:`Batch` nor a :class:`Watermark`.
    """
    if type(item) is Batch:
        if item.headers is None:
            return encode((_BATCH, item.values, item.timestamps, item.keys))
        return encode((_BATCH, item.values, item.timestamps, item.keys, item.headers))
    if type(item) is Watermark:
        return encode((_WATERMARK, item.timestamp_ms, item.idle))
    raise TypeError(f"only buffers and watermarks are in-flight data, got {type(item).__name__}")


def decode_item(content: Any) -> object:
    """Turn the decoded value of :func:`encode_item` back into a buffer or watermark.

    Raises:
        CheckpointError: the value is not an encoded item.
    """
    if type(content) is tuple and content and content[0] == _BATCH and len(content) in (4, 5):
        headers = content[4] if len(content) == 5 else None
        return Batch(content[1], content[2], content[3], headers)
    if type(content) is tuple and content and content[0] == _WATERMARK and len(content) == 3:
        return Watermark(content[1], content[2])
    raise CheckpointError("in-flight data holds an item that is neither a buffer nor a watermark")


@dataclass
class ChannelState:
    """One task's in-flight data of one checkpoint, each item encoded by :func:`encode_item`.

    Attributes:
        output: per record writer, per target channel, the overtaken items in order.
        inputs: input channel index → the items that arrived before the barrier, in order.
    """

    output: list[list[list[bytes]]] = field(default_factory=list)
    inputs: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def items(self) -> int:
        """Number of buffers and watermarks held."""
        return sum(len(t) for w in self.output for t in w) + sum(map(len, self.inputs.values()))

    @property
    def uses_pickle(self) -> bool:
        """Whether any item needed pickle (the file must then be signed)."""
        return any(is_pickled(b) for b in self._blobs())

    def _blobs(self) -> Iterable[bytes]:
        for w in self.output:
            for t in w:
                yield from t
        for items in self.inputs.values():
            yield from items

    def decoded(self, decode_blob: Callable[[bytes], Any]) -> InFlightData:
        """Decode every item with ``decode_blob`` (which decides whether pickle is allowed).

        Raises:
            CheckpointError: an item is not a buffer or watermark.
        """
        return InFlightData(
            output=[[[decode_item(decode_blob(b)) for b in t] for t in w] for w in self.output],
            inputs={
                i: [decode_item(decode_blob(b)) for b in items] for i, items in self.inputs.items()
            },
        )

    def to_bytes(self) -> bytes:
        """The state file's content: a versioned msgpack index of the encoded items."""
        return encode_plain(
            {
                "version": FORMAT_VERSION,
                "output": self.output,
                "inputs": sorted(self.inputs.items()),
            }
        )

    @classmethod
    def from_bytes(cls, payload: bytes, what: str) -> ChannelState:
        """Read :meth:`to_bytes` output; items stay encoded (no pickle is decoded here).

        Args:
            payload: the verified file content.
            what: the file, for messages.

        Raises:
            CheckpointError: not an in-flight data file.
            UnsupportedFormatVersionError: written by a newer format.
        """
        content = decode(payload)
        if not isinstance(content, dict) or set(content) != {"version", "output", "inputs"}:
            raise CheckpointError(f"{what} is not an in-flight data file")
        check_format_version(content["version"], FORMAT_VERSION, what)
        return cls(
            output=[[list(t) for t in w] for w in content["output"]],
            inputs={int(i): list(items) for i, items in content["inputs"]},
        )


@dataclass
class InFlightData:
    """A task's restored in-flight data, decoded, ready to replay (:meth:`Task.replay`).

    Attributes:
        output: per record writer, per target channel, buffers and watermarks in order.
        inputs: input channel index → buffers and watermarks in order.
    """

    output: list[list[list[object]]]
    inputs: dict[int, list[object]]


class InFlightCapture:
    """Collects one task's in-flight data while its unaligned checkpoint is in progress.

    Args:
        checkpoint_id: the checkpoint.
        output: per writer, per target, the items barrier ``checkpoint_id`` overtook.
        awaiting: input channels that have not delivered the barrier yet.
        output_barrier: a barrier still queued behind records in the task's
            writers (aligned so far, with an alignment timeout): the output
            in-flight data is known once it left them (:meth:`output_resolved`).
    """

    def __init__(
        self,
        checkpoint_id: int,
        output: list[list[list[object]]],
        awaiting: set[int],
        output_barrier: CheckpointBarrier | None = None,
    ) -> None:
        self.checkpoint_id = checkpoint_id
        self.state = ChannelState(output=[], inputs={i: [] for i in awaiting})
        self._set_output(output)
        self.awaiting = set(awaiting)
        self.output_barrier = output_barrier
        self._callbacks: list[Callable[[ChannelState], None]] = []

    def _set_output(self, output: list[list[list[object]]]) -> None:
        self.state.output = [[[encode_item(x) for x in t] for t in w] for w in output]

    @property
    def complete(self) -> bool:
        """Whether every input channel delivered the barrier or ended, and it left every output."""
        return not self.awaiting and self.output_barrier is None

    def output_resolved(self, output: list[list[list[object]]] | None) -> None:
        """The queued barrier left the writers: ``output`` is what it overtook on the way.

        Args:
            output: per writer, per target, the items overtaken; ``None`` when it
                was sent in order (nothing overtaken).
        """
        if output is not None:
            self._set_output(output)
        self.output_barrier = None
        self._maybe_complete()

    def record(self, channel: int, item: object) -> None:
        """An item was taken from ``channel``; keep it when that channel's barrier is still due."""
        if channel in self.awaiting:
            self.state.inputs[channel].append(encode_item(item))

    def barrier_arrived(self, channel: int, ahead: list[object]) -> None:
        """Barrier ``checkpoint_id`` came out of ``channel`` ahead of ``ahead`` (still queued)."""
        if channel in self.awaiting:
            self.state.inputs[channel].extend(
                encode_item(x) for x in ahead if type(x) is Batch or type(x) is Watermark
            )
            self._done(channel)

    def channel_ended(self, channel: int) -> None:
        """``channel`` ended before delivering the barrier (its sender had finished)."""
        if channel in self.awaiting:
            self._done(channel)

    def _done(self, channel: int) -> None:
        self.awaiting.discard(channel)
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self.complete:
            callbacks, self._callbacks = self._callbacks, []
            for fn in callbacks:
                fn(self.state)

    def on_complete(self, fn: Callable[[ChannelState], None]) -> None:
        """Call ``fn(state)`` once the capture is complete (now, when it already is)."""
        if self.complete:
            fn(self.state)
        else:
            self._callbacks.append(fn)


def submit_when_captured(
    capture: InFlightCapture | None,
    snap: EncodedSnapshot,
    submit: Callable[[EncodedSnapshot], None],
) -> None:
    """Hand a task's snapshot to ``submit`` once its in-flight data is captured.

    Args:
        capture: the task's capture for this checkpoint (``Task.capture_of``),
            ``None`` for an aligned snapshot (submitted now).
        snap: the encoded operator states, taken when the checkpoint started.
        submit: writes the files and acknowledges (the asynchronous part).
    """
    if capture is None:
        submit(snap)
        return

    def captured(state: ChannelState) -> None:
        n = state.items
        submit(with_channel_state(snap, state.to_bytes(), n, state.uses_pickle) if n else snap)

    capture.on_complete(captured)


def in_flight_items(manifest: Manifest) -> int:
    """Buffers and watermarks in flight that checkpoint ``manifest`` holds (0: aligned)."""
    return sum(int(t.metadata.get(IN_FLIGHT_ITEMS, 0)) for t in manifest.tasks.values())
