"""Streams: the fluent builder over the logical graph.

Every method appends a frozen operator description to the dataflow's
logical graph and returns a new stream; nothing runs until ``Dataflow.run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from weirflow.errors import ConfigError
from weirflow.graph import Edge, ErrorPolicy, OperatorSpec, check_error_policy
from weirflow.time import CountWindows, SessionWindows, SlidingWindows, TumblingWindows, to_ms

if TYPE_CHECKING:
    from weirflow.api.dataflow import Dataflow
    from weirflow.api.functions import AggregateFunction, KeyedProcessFunction
    from weirflow.connectors import Sink

WindowAssigner = TumblingWindows | SlidingWindows | SessionWindows | CountWindows


class Stream:
    """A stream of records: the main output (or a side output) of an operator.

    Args:
        flow: the dataflow the stream belongs to.
        op: the producing operator.
        output: which output of ``op`` this stream is.
        partitioning: how the next operator receives it.
        key_fn: the key selector when ``partitioning`` is ``key_by``.
    """

    def __init__(
        self,
        flow: Dataflow,
        op: OperatorSpec,
        output: str = "main",
        partitioning: str = "forward",
        key_fn: Callable[[Any], Any] | None = None,
    ) -> None:
        self.flow = flow
        self.op = op
        self._output = output
        self._partitioning = partitioning
        self._key_fn = key_fn

    def _edge(self) -> Edge:
        return Edge(self.op.id, self._partitioning, self._key_fn, self._output)  # type: ignore[arg-type]

    def _then(
        self,
        kind: str,
        name: str | None,
        params: dict[str, Any],
        on_error: ErrorPolicy = "fail",
        inputs: tuple[Edge, ...] | None = None,
        uid: str | None = None,
    ) -> Stream:
        spec = self.flow.graph.add(
            kind,
            name=name,
            inputs=inputs or (self._edge(),),
            params=params,
            on_error=check_error_policy(on_error),
            uid=uid,
        )
        return Stream(self.flow, spec)

    def map(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: ErrorPolicy = "fail"
    ) -> Stream:
        """Apply ``fn`` to every record.

        Args:
            fn: ``record -> record``.
            name: operator name (default ``map_<id>``).
            on_error: ``"fail"``, ``"dead_letter"`` or a :class:`~weirflow.RetryPolicy`.
        """
        return self._then("map", name, {"fn": fn}, on_error)

    def filter(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: ErrorPolicy = "fail"
    ) -> Stream:
        """Keep the records for which ``fn`` is truthy (the others count as filtered)."""
        return self._then("filter", name, {"fn": fn}, on_error)

    def flat_map(
        self,
        fn: Callable[[Any], Iterable[Any]],
        *,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
    ) -> Stream:
        """Replace every record by the records of the iterable ``fn`` returns (zero or more)."""
        return self._then("flat_map", name, {"fn": fn}, on_error)

    def key_by(self, key_fn: Callable[[Any], Any]) -> KeyedStream:
        """Partition by key: records with equal keys go to the same subtask.

        Args:
            key_fn: ``record -> key``; keys must be ``str``, ``bytes``, ``int``
                or plain data/picklable (they are hashed by their bytes, and
                kept in state).
        """
        return KeyedStream(self.flow, self.op, self._output, key_fn)

    def rebalance(self) -> Stream:
        """Spread records round robin over the next operator's subtasks."""
        return Stream(self.flow, self.op, self._output, "rebalance")

    def broadcast(self) -> Stream:
        """Send every record to every subtask of the next operator."""
        return Stream(self.flow, self.op, self._output, "broadcast")

    def union(self, *others: Stream, name: str | None = None) -> Stream:
        """Merge this stream with ``others`` (order across inputs is not kept)."""
        for o in others:
            if o.flow is not self.flow:
                raise ConfigError("union() needs streams of the same Dataflow")
        edges = tuple(s._edge() for s in (self, *others))
        return self._then("union", name, {}, inputs=edges)

    def sink(self, sink: Sink, *, name: str | None = None) -> Stream:
        """Write the stream to ``sink`` (a connector from :mod:`weirflow.connectors`).

        Returns:
            The sink's stream, whose only use is ``.dead_letters()``: the
            records the external system refused (a sink that sets records
            aside, such as ``PostgresSink``); it has no main output.
        """
        if not callable(getattr(sink, "create_writer", None)):
            raise ConfigError(
                f"{type(sink).__name__} is not a sink: it needs create_writer(); use a "
                "connector from weirflow.connectors"
            )
        return self._then("sink", name, {"sink": sink})

    def dead_letters(self) -> Stream:
        """The records this stream's operator could not process (``on_error='dead_letter'``).

        Returns:
            A stream of :class:`~weirflow.records.DeadLetter`.
        """
        return Stream(self.flow, self.op, "dead_letter")

    def late_records(self) -> Stream:
        """Records too late for their window (past the allowed lateness), as
        :class:`~weirflow.records.LateRecord`; only on a window's result stream.

        Raises:
            ConfigError: this stream does not come from a window.
        """
        if self.op.kind != "window":
            raise ConfigError(
                f"late_records() is only defined on a window's result stream, not on "
                f"{self.op.name!r} ({self.op.kind})"
            )
        return Stream(self.flow, self.op, "late")


class KeyedStream(Stream):
    """A stream partitioned by key; keyed operators and windows start here."""

    def __init__(
        self, flow: Dataflow, op: OperatorSpec, output: str, key_fn: Callable[[Any], Any]
    ) -> None:
        super().__init__(flow, op, output, "key_by", key_fn)

    def reduce(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
        uid: str | None = None,
    ) -> Stream:
        """Rolling reduce: emit ``fn(previous, record)`` per key after every record.

        ``uid`` keeps the operator's state under that id instead of its name,
        so that the name may change between versions of the job (as on every
        stateful operator).
        """
        return self._then("rolling_reduce", name, {"fn": fn}, on_error, uid=uid)

    def process(
        self,
        fn: KeyedProcessFunction[Any, Any],
        *,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
        uid: str | None = None,
    ) -> Stream:
        """Run a :class:`~weirflow.api.KeyedProcessFunction` with keyed state and timers."""
        if not callable(getattr(fn, "process_element", None)):
            raise ConfigError("process() needs a KeyedProcessFunction (with process_element)")
        return self._then("keyed_process", name, {"fn": fn}, on_error, uid=uid)

    def window(
        self, assigner: WindowAssigner, *, allowed_lateness: timedelta = timedelta(0)
    ) -> WindowedStream:
        """Group each key's records into windows.

        Args:
            assigner: ``TumblingWindows``, ``SlidingWindows``, ``SessionWindows``
                or ``CountWindows`` from :mod:`weirflow.windows`.
            allowed_lateness: how long after a window fired a late record may
                still update (and re-fire) it; later records go to ``late_records()``.
        """
        if not isinstance(
            assigner, TumblingWindows | SlidingWindows | SessionWindows | CountWindows
        ):
            raise ConfigError(f"window() needs a window assigner, got {type(assigner).__name__}")
        return WindowedStream(self, assigner, to_ms(allowed_lateness, "allowed_lateness"))


class WindowedStream:
    """A keyed stream grouped into windows, waiting for its window function."""

    def __init__(
        self, keyed: KeyedStream, assigner: WindowAssigner, allowed_lateness_ms: int
    ) -> None:
        self._keyed = keyed
        self._assigner = assigner
        self._lateness = allowed_lateness_ms

    def _window(
        self, function: str, fn: Any, name: str | None, on_error: ErrorPolicy, uid: str | None
    ) -> Stream:
        return self._keyed._then(
            "window",
            name,
            {
                "assigner": self._assigner,
                "allowed_lateness_ms": self._lateness,
                "function": function,
                "fn": fn,
            },
            on_error,
            uid=uid,
        )

    def reduce(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
        uid: str | None = None,
    ) -> Stream:
        """Reduce each window with ``fn(a, b)``; emits :class:`~weirflow.WindowResult`."""
        return self._window("reduce", fn, name, on_error, uid)

    def aggregate(
        self,
        fn: AggregateFunction[Any, Any, Any],
        *,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
        uid: str | None = None,
    ) -> Stream:
        """Aggregate each window incrementally with an :class:`~weirflow.AggregateFunction`."""
        return self._window("aggregate", fn, name, on_error, uid)

    def count(self, *, name: str | None = None, uid: str | None = None) -> Stream:
        """Count each window's records."""
        return self._window("count", None, name, "fail", uid)

    def process(
        self,
        fn: Callable[[Any, Any, list[Any]], Any],
        *,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
        uid: str | None = None,
    ) -> Stream:
        """Call ``fn(key, window, records)`` once per window firing with all its records."""
        return self._window("process", fn, name, on_error, uid)
