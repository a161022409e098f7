"""The source operator: reads batches from its splits, stamps event time, makes watermarks.

Each split has its own watermark generator (its state travels in the
checkpoint with the split position); the subtask's output watermark is the
minimum over its splits, ignoring idle ones (a :class:`~weirflow.time.WatermarkValve`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from weirflow.connectors import (
    CommitsReadPositions,
    CommitTrackingSink,
    DecodeFailure,
    HeaderWriter,
    KeepsCommittedPositions,
    ReadsHeaders,
    RejectingWriter,
    ReportsFinishedSplits,
    Source,
    SourceReader,
    refuse_commits_after,
)
from weirflow.errors import ConfigError, JobFailedError, TimestampError
from weirflow.faults import fault_point
from weirflow.graph import LogicalGraph, OperatorSpec
from weirflow.metrics import ConnectorStats, ReportsConnectorStats
from weirflow.runtime.operators.base import OperatorContext, OperatorLogic
from weirflow.runtime.operators.errors import (
    call_each,
    call_with_policy,
    dead_letter,
    describe_function,
    operator_error,
)
from weirflow.state import OperatorStateSnapshot, Redistribution
from weirflow.time import (
    MAX_WATERMARK,
    WatermarkGenerator,
    WatermarkStrategy,
    WatermarkValve,
    check_timestamp_ms,
)

_INT_ONLY = frozenset({int})


def all_ints(stamps: list[Any]) -> bool:
    """Whether every element is exactly an ``int`` (the per-record check of the fast path)."""
    return {*map(type, stamps)} <= _INT_ONLY


def assigned_splits(splits: list[str], subtask: int, parallelism: int) -> list[str]:
    """Return the splits of ``subtask``: split ``i`` goes to subtask ``i % parallelism``."""
    return [s for i, s in enumerate(splits) if i % parallelism == subtask]


class SourceLogic(OperatorLogic):
    """Drives one :class:`~weirflow.connectors.SourceReader`.

    ``spec.params``: ``source`` (the connector), ``timestamp`` (extractor or
    ``None``), ``watermarks`` (a :class:`~weirflow.time.WatermarkStrategy` or ``None``).

    Bad records follow ``spec.on_error``: a record whose extractor raises or
    returns no valid event time (:func:`~weirflow.time.check_timestamp_ms`),
    and a record the connector's ``decode=`` refused (a
    :class:`~weirflow.connectors.DecodeFailure` in the batch). Counts balance:
    ``records_in = records_out + dead_lettered``.
    """

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        super().__init__(spec, ctx)
        self.source: Source = spec.params["source"]
        self.timestamp_fn: Callable[[Any], int] | None = spec.params.get("timestamp")
        strategy: WatermarkStrategy | None = spec.params.get("watermarks")
        self.strategy = strategy
        self.splits = assigned_splits(self.source.list_splits(), ctx.subtask, ctx.parallelism)
        self.reader: SourceReader | None = None
        self.finishing: ReportsFinishedSplits | None = None
        self.committing: CommitsReadPositions | None = None
        self.generators: dict[str, WatermarkGenerator] = {}
        self.split_index = {s: i for i, s in enumerate(self.splits)}
        self.valve = WatermarkValve(max(1, len(self.splits)))
        self.uses_event_time = self.timestamp_fn is not None or strategy is not None
        # Split alignment (after Flink's watermark alignment, FLIP-182): with
        # several splits, read the one furthest behind in event time first, so
        # that no split runs ahead and fills windows the watermark cannot close.
        self.align = strategy is not None and len(self.splits) > 1
        self.idleness = strategy is not None and strategy.idleness_ms is not None

    def open(self, restored: Mapping[int, Any] | None) -> None:
        """Create the reader at the restored positions and watermark generator states.

        Args:
            restored: ``{old subtask: state}`` of every old subtask (union
                redistribution): each subtask picks the entries of its own splits.
        """
        positions: dict[str, Any] = {}
        watermarks: dict[str, Any] = {}
        for state in (restored or {}).values():
            positions.update(state["positions"])
            watermarks.update(state["watermarks"])
        self.commit_on_read = self.ctx.guarantee == "at_most_once"
        if self.commit_on_read:
            if not isinstance(self.source, KeepsCommittedPositions):
                raise ConfigError(
                    f"{self.task_name}: at_most_once needs a source that commits positions as "
                    f"it reads (EventLogSource or KafkaSource with a group), not "
                    f"{type(self.source).__name__}"
                )
            positions = self.source.committed_positions(self.splits)
        self.reader = self.source.create_reader(self.splits, positions)
        self.finishing = self.reader if isinstance(self.reader, ReportsFinishedSplits) else None
        self.committing = self.reader if isinstance(self.reader, CommitsReadPositions) else None
        if self.commit_on_read and self.committing is None:
            raise ConfigError(
                f"{self.task_name}: at_most_once needs a reader that commits positions as it "
                f"reads; {type(self.reader).__name__} does not"
            )
        if self.ctx.tracer is not None and isinstance(self.reader, ReadsHeaders):
            self.reader.include_headers()
        if self.strategy is not None:
            for s in self.splits:
                gen = self.strategy.create_generator()
                if s in watermarks:
                    gen.restore(watermarks[s])
                self.generators[s] = gen

    def poll(self, max_records: int) -> int:
        """Read and emit one batch.

        Returns:
            Records read, undecodable ones included (0 when no split had data now).
        """
        assert self.reader is not None
        if self.align:
            gens = self.generators
            order = sorted(self.splits, key=lambda s: gens[s].current_watermark())
            batch = self.reader.poll(max_records, order)
        else:
            batch = self.reader.poll(max_records)
        if batch is None:
            if self.finishing is not None and self.finishing.newly_finished:
                self._release_finished()
            self._check_idleness()
            return 0
        values = batch.values
        timestamps = batch.timestamps
        tracer = self.ctx.tracer
        self.records_in += len(values)
        if self.committing is not None and self.commit_on_read:
            self.committing.commit_read_positions()
        if batch.failures:
            self.records_in += len(batch.failures)
            self._reject_undecodable(batch.failures)
        if tracer is None:
            values, timestamps, _ = self._stamp(values, timestamps, None)
            self.output.emit(values, timestamps)
        else:
            # a connector without headers: its records still travel with (empty) headers
            headers = batch.headers if batch.headers is not None else [()] * len(values)
            with tracer.batch_span(self.name, self.ctx.subtask, headers, chained=False):
                values, timestamps, kept = self._stamp(values, timestamps, headers)
                self.output.emit(values, timestamps, kept)
        gen = self.generators.get(batch.split)
        if gen is not None and timestamps:
            gen.on_timestamps(timestamps, self.ctx.clock())
            wm = self.valve.on_watermark(self.split_index[batch.split], gen.current_watermark())
            if wm is not None:
                self.output.emit_watermark(wm)
        # only after the batch: a split may report itself finished with its last records
        if self.finishing is not None and self.finishing.newly_finished:
            self._release_finished()
        if self.idleness:
            # an empty split goes idle while another has a backlog, or it would hold the
            # watermark back for the whole catch-up
            self._check_idleness()
        return len(batch.values) + len(batch.failures)

    def _stamp(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None
    ) -> tuple[list[Any], list[int] | None, list[Any] | None]:
        """Apply the timestamp function, if any; records it fails on follow ``on_error``.

        Returns:
            The kept records, their timestamps and headers (parallel lists).
        """
        fn = self.timestamp_fn
        if fn is None:
            return values, timestamps, headers
        stamps, kept = call_each(self, fn, values, None, headers)
        if kept is not None:
            values = [values[i] for i in kept]
            headers = [headers[i] for i in kept] if headers is not None else None
        if not all_ints(stamps):
            return self._check_timestamps(values, stamps, headers)
        return values, stamps, headers

    def _check_timestamps(
        self, values: list[Any], stamps: list[Any], headers: list[Any] | None
    ) -> tuple[list[Any], list[int], list[Any] | None]:
        """Turn what the timestamp function returned into int ms; a record whose value
        :func:`~weirflow.time.check_timestamp_ms` refuses follows ``on_error``.

        Returns:
            The kept records, their timestamps and headers (parallel lists).
        """
        origin = self._timestamp_origin
        kept: list[Any] = []
        out: list[int] = []
        kept_headers: list[Any] | None = [] if headers is not None else None
        for i, (v, t) in enumerate(zip(values, stamps, strict=True)):
            h = headers[i] if headers is not None else ()
            if type(t) is not int:
                try:
                    t = check_timestamp_ms(t, origin)
                except TimestampError as e:
                    ok, t = call_with_policy(
                        self, self._checked_timestamp, v, None, first_error=e, headers=h
                    )
                    if not ok:
                        continue
            kept.append(v)
            out.append(t)
            if kept_headers is not None:
                kept_headers.append(h)
        return kept, out, kept_headers

    def _checked_timestamp(self, value: Any) -> int:
        """The timestamp function and the check together (what a retry calls)."""
        return check_timestamp_ms(self.timestamp_fn(value), self._timestamp_origin)  # type: ignore[misc]

    @property
    def _timestamp_origin(self) -> str:
        return f"timestamp function {describe_function(self.timestamp_fn)}"

    def _reject_undecodable(self, failures: Sequence[DecodeFailure]) -> None:
        """Apply ``on_error`` to records the connector's ``decode=`` refused.

        Decoding the same bytes again gives the same error, so a
        :class:`~weirflow.RetryPolicy` dead-letters them at once.

        Raises:
            OperatorError: the policy is ``fail``; the message names the
                topic, partition and offset, and the decode error is the cause.
        """
        if self.spec.on_error == "fail":
            f = failures[0]
            raise operator_error(
                self,
                f"cannot decode the record at {f.position}: {type(f.error).__name__}: "
                f"{f.error} (raw value {f.raw!r:.120}). Fix the source's decode= function, or "
                "pass on_error='dead_letter' to flow.source(...) to route undecodable records "
                "to dead_letters()",
                f.raw,
                f.position,
            ) from f.error
        for f in failures:
            dead_letter(
                self, f.raw, f.timestamp_ms, f.error, 1, position=f.position, headers=f.headers
            )

    def _release_finished(self) -> None:
        """A finished split holds no watermark back any more (it will send nothing)."""
        assert self.finishing is not None
        finished = self.finishing.newly_finished
        for s in finished:
            if s in self.generators:
                wm = self.valve.on_watermark(self.split_index[s], MAX_WATERMARK)
                if wm is not None:
                    self.output.emit_watermark(wm)
        finished.clear()

    def _check_idleness(self) -> None:
        now = self.ctx.clock()
        for s, gen in self.generators.items():
            if gen.is_idle(now):
                wm = self.valve.on_idle(self.split_index[s])
                if wm is not None:
                    self.output.emit_watermark(wm)

    def all_idle(self) -> bool:
        """Whether every split of this subtask is idle (or it has no split)."""
        return not self.splits or (bool(self.generators) and self.valve.all_idle())

    def finished(self) -> bool:
        """Whether the reader exhausted every split."""
        return self.reader is not None and self.reader.finished()

    def snapshot_state(self, checkpoint_id: int) -> OperatorStateSnapshot:
        """Split positions and watermark generator states (plain data, union redistribution)."""
        assert self.reader is not None
        state = {
            "positions": self.reader.positions(),
            "watermarks": {s: g.snapshot() for s, g in self.generators.items()},
        }
        return OperatorStateSnapshot(state, Redistribution.UNION)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Tell the reader (event-log and Kafka readers update consumer groups for lag)."""
        if self.reader is not None:
            self.reader.notify_checkpoint_complete(checkpoint_id)

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        """Sources have no input."""
        raise TypeError(f"{self.task_name} is a source and has no input")

    def close(self) -> None:
        """Close the reader."""
        if self.reader is not None:
            self.reader.close()


class SinkLogic(OperatorLogic):
    """Hands batches to a :class:`~weirflow.connectors.SinkWriter`.

    A writer that sets refused records aside (a
    :class:`~weirflow.connectors.RejectingWriter`) has them routed to the
    dead-letter output after each of its calls.

    ``spec.params``: ``sink`` (the connector).
    """

    def open(self, restored: Any | None) -> None:
        """Create the writer; it resolves transactions of the restored checkpoint."""
        self.writer = self.spec.params["sink"].create_writer(
            self.ctx.job, self.name, self.ctx.subtask, self.ctx.parallelism, restored
        )
        # checked once: isinstance against a runtime-checkable Protocol costs microseconds,
        # and process_batch asks twice a batch
        self.rejecting = self.writer if isinstance(self.writer, RejectingWriter) else None
        self.input_ended = False

    def _route_rejected(self) -> None:
        """Send the writer's refused records to the dead-letter output.

        Raises:
            JobFailedError: (retriable) records were refused after the end of input: the
                operators after the sink have ended, so their dead letters would be lost;
                the attempt fails instead, and its restore replays them.
        """
        if self.rejecting is None:
            return
        rejected = self.rejecting.take_rejected()
        if rejected and self.input_ended:
            raise JobFailedError(
                f"{self.task_name}: {len(rejected)} record(s) refused after the end of input "
                f"(first: {rejected[0].error}); their dead letters could not be delivered, "
                "so the attempt fails and is replayed from the last completed checkpoint"
            )
        for r in rejected:
            dead_letter(self, r.value, r.timestamp_ms, r.error, 1)

    def end_of_input(self) -> None:
        """Have a writer that refuses records find its last refusals, and route them
        while the operators after the sink still take input."""
        if self.rejecting is not None:
            self.rejecting.end_of_input()
            self._route_rejected()
        self.input_ended = True

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        """Write a batch; with headers (tracing on), a writer that stores headers gets
        them with each ``traceparent`` pointing at this operator's span."""
        self.records_in += len(values)
        self._route_rejected()
        tracer = self.ctx.tracer
        if headers is None or tracer is None or not isinstance(self.writer, HeaderWriter):
            self.writer.write(values, timestamps)
        else:
            self.writer.write_with_headers(values, timestamps, tracer.stamp(headers))
        self._route_rejected()

    def snapshot_state(self, checkpoint_id: int) -> OperatorStateSnapshot:
        """Pre-commit: the writer's committable for this checkpoint (round-robin redistribution)."""
        fault_point("pre_commit")
        state = self.writer.pre_commit(checkpoint_id)
        self._route_rejected()
        return OperatorStateSnapshot(state, Redistribution.ROUND_ROBIN)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit what was pre-committed for ``checkpoint_id``."""
        fault_point("sink_commit")
        self.writer.commit(checkpoint_id)
        self._route_rejected()

    def finish(self) -> None:
        """End of input without checkpoints: commit everything."""
        self.writer.finish()
        self._route_rejected()

    def connector_stats(self) -> ConnectorStats | None:
        """What the writer reports on its external system, if it reports (metrics)."""
        writer = self.writer
        return writer.connector_stats() if isinstance(writer, ReportsConnectorStats) else None

    def close(self) -> None:
        """Close the writer."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()


def refuse_duplicate_sink_output(
    graph: LogicalGraph,
    parallelism: int,
    restored: Mapping[str, Mapping[int, Any]],
    checkpoint_id: int,
    *,
    allow: bool = False,
) -> None:
    """Before sinks are opened on a restore, fail if one would commit its output twice.

    Args:
        graph: the job's logical graph.
        parallelism: sink subtasks of the restoring attempt.
        restored: ``operator name -> subtask -> state``, as ``plan_restore`` made it.
        checkpoint_id: the checkpoint being restored.
        allow: log the duplicates as a warning instead of failing.

    Raises:
        DuplicateOutputError: a sink committed output for a newer checkpoint
            and ``allow`` is false (see :func:`~weirflow.connectors.refuse_commits_after`).
    """
    for op in graph.operators:
        sink = op.params.get("sink") if op.kind == "sink" else None
        if isinstance(sink, CommitTrackingSink):
            states = restored.get(op.name, {})
            by_subtask = {i: states.get(i) for i in range(parallelism)}
            refuse_commits_after(graph.name, op.name, sink, by_subtask, checkpoint_id, allow=allow)
