"""The operator logic interface and the output fan-out between chained operators.

A logic object is built from a frozen :class:`~weirflow.graph.OperatorSpec`
for one subtask. Its hooks map one-to-one onto what arrives in-band:
``process_batch`` (a buffer of records), ``on_watermark`` (returns the
watermark to forward, or ``None``), ``snapshot_state`` (a barrier),
``notify_checkpoint_complete`` (a completed checkpoint), ``end_of_input``
(every input ended) and ``close``.

State rule: an operator keeps everything that changes while records flow in
declared state (the keyed state backend, or what ``snapshot_state`` returns);
plain attributes hold only configuration and counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from weirflow.graph import OperatorSpec
from weirflow.metrics import BatchTracer
from weirflow.runtime.events import Watermark
from weirflow.runtime.partitioners import RecordWriter
from weirflow.state import (
    BackendScope,
    KeyGroupRange,
    MemoryStateBackend,
    OperatorSnapshot,
    StateBackend,
)


@dataclass(frozen=True)
class OperatorContext:
    """Where a logic object runs.

    Attributes:
        job: the job name.
        subtask: subtask index, 0-based.
        parallelism: subtasks of the operator.
        max_parallelism: number of key groups.
        key_group_range: the key groups this subtask owns.
        clock: processing time in ms (injected so tests drive it).
        sleep: blocking wait in seconds, used only by retry backoff (injected).
        guarantee: the job's delivery guarantee; at ``at_most_once`` sources
            commit their positions as they read.
        state_backend: where keyed operators keep their state and timers.
        tracer: opens the spans of this subtask's operators when the job runs
            with tracing (sources then attach record headers); ``None`` without.
    """

    job: str
    subtask: int
    parallelism: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    clock: Callable[[], int]
    sleep: Callable[[float], None] = field(default=lambda s: None)
    guarantee: str = "exactly_once"
    state_backend: StateBackend = field(default_factory=MemoryStateBackend)
    tracer: BatchTracer | None = None

    def backend_scope(self, operator: str) -> BackendScope:
        """Return the scope of ``operator``'s keyed backend in this subtask."""
        return BackendScope(
            self.job, operator, self.subtask, self.key_group_range, self.max_parallelism
        )


class OutputTargets:
    """The receivers of one output (main or side) of an operator."""

    __slots__ = ("chained", "records", "writers")

    def __init__(self) -> None:
        self.chained: list[OperatorLogic] = []
        self.writers: list[RecordWriter] = []
        self.records = 0

    def emit(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """Hand a batch to every chained operator and network writer of this output.

        ``headers`` (one tuple per record) travel with the records when the job runs
        with tracing; without, they are ``None`` and nothing else happens per batch.
        """
        if not values:
            return
        self.records += len(values)
        if headers is None:
            for op in self.chained:
                op.process_batch(values, timestamps, None)
            for w in self.writers:
                w.write(values, timestamps)
            return
        for op in self.chained:
            deliver(op, values, timestamps, None, headers, chained=True)
        for w in self.writers:
            w.write(values, timestamps, headers)

    def emit_watermark(self, watermark_ms: int) -> None:
        """Pass a watermark to every receiver; chained operators decide what to forward."""
        for op in self.chained:
            forwarded = op.on_watermark(watermark_ms)
            if forwarded is not None:
                op.output.emit_watermark(forwarded)
        if self.writers:
            wm = Watermark(watermark_ms)
            for w in self.writers:
                w.broadcast_event(wm)


class Output:
    """All outputs of one operator: ``main`` and named side outputs."""

    __slots__ = ("main", "side")

    def __init__(self) -> None:
        self.main = OutputTargets()
        self.side: dict[str, OutputTargets] = {}

    def targets(self, name: str) -> OutputTargets:
        """Return the receivers of output ``name`` (created on first use)."""
        if name == "main":
            return self.main
        if name not in self.side:
            self.side[name] = OutputTargets()
        return self.side[name]

    def emit(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """Emit on the main output."""
        self.main.emit(values, timestamps, headers)

    def emit_side(self, name: str, values: list[Any], timestamps: list[int] | None) -> None:
        """Emit on side output ``name``; without receivers the records are only counted.

        Side outputs carry no headers: a dead letter keeps its record's headers itself.
        """
        t = self.side.get(name)
        if t is None:
            return
        t.emit(values, timestamps)

    def emit_watermark(self, watermark_ms: int) -> None:
        """Send a watermark on every output, main and side."""
        self.main.emit_watermark(watermark_ms)
        for t in self.side.values():
            t.emit_watermark(watermark_ms)

    def has_side(self, name: str) -> bool:
        """Whether side output ``name`` has any receiver."""
        t = self.side.get(name)
        return t is not None and bool(t.chained or t.writers)


class OperatorLogic:
    """Base of all operator logic objects; subclasses override the hooks they need.

    Args:
        spec: the operator's frozen description.
        ctx: where this instance runs.

    Attributes:
        records_in: records received.
        filtered: records dropped by a filter.
        late: records routed to the late output.
        dead_lettered: records routed to the dead-letter output.
        uses_processing_time: class attribute; the scheduler gives processing
            time only to operators that set it.
    """

    uses_processing_time: bool = False

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.name = spec.name
        self.task_name = f"{spec.name}[{ctx.subtask}/{ctx.parallelism}]"
        self.output = Output()
        self.records_in = 0
        self.filtered = 0
        self.late = 0
        self.dead_lettered = 0

    @property
    def records_out(self) -> int:
        """Records emitted on the main output."""
        return self.output.main.records

    def open(self, restored: Any | None) -> None:
        """Prepare to run, from the state ``snapshot_state`` returned at the restored checkpoint.

        Args:
            restored: ``None`` on a fresh start; a
                :class:`~weirflow.state.KeyedRestore` for a keyed snapshot;
                ``{old subtask: state}`` for an operator-state snapshot.
        """

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        """Process a buffer of records (parallel lists; ``keys`` only from a key_by channel,
        ``headers`` only when the job runs with tracing). An operator that emits one
        output per kept input passes the inputs' headers on with them."""
        raise NotImplementedError  # abstract

    def on_watermark(self, watermark_ms: int) -> int | None:
        """React to the input watermark; return the watermark to forward, or ``None``."""
        return watermark_ms

    def on_processing_time(self, now_ms: int) -> None:
        """Processing time advanced to ``now_ms`` (fires processing-time timers)."""

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot | None:
        """Return this subtask's state for checkpoint ``checkpoint_id`` (synchronous part).

        The returned object must not change afterwards; ``None`` means no state.
        """
        return None

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete (its manifest is written)."""

    def end_of_input(self) -> None:
        """Every input has ended; emit whatever is still held."""

    def close(self) -> None:
        """Release resources; called once, also after a failure."""


def deliver(
    op: OperatorLogic,
    values: list[Any],
    timestamps: list[int] | None,
    keys: list[Any] | None,
    headers: list[Any],
    *,
    chained: bool,
) -> None:
    """Hand a buffer that carries headers to ``op``, inside its span when it traces.

    Args:
        op: the receiving operator.
        values: the records.
        timestamps: their event times, or ``None``.
        keys: their keys from a key_by channel, or ``None``.
        headers: their headers, one tuple per record.
        chained: ``op`` is called by the operator before it in its chain (its span is
            then a child of that operator's), not handed a buffer from a channel.
    """
    tracer = op.ctx.tracer
    if tracer is None:
        op.process_batch(values, timestamps, keys, headers)
        return
    with tracer.batch_span(op.name, op.ctx.subtask, headers, chained=chained):
        op.process_batch(values, timestamps, keys, headers)
