"""Keyed operators without windows: rolling ``reduce`` and ``process(KeyedProcessFunction)``."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from weirflow.graph import OperatorSpec
from weirflow.runtime.keycache import KeyGroupCache
from weirflow.runtime.operators.base import OperatorContext, OperatorLogic
from weirflow.runtime.operators.errors import call_each, call_with_policy
from weirflow.runtime.operators.keyclass import KeyClassCheck
from weirflow.serde import StateSchemaError
from weirflow.serde.schema_check import StateRecord, state_changes, state_record
from weirflow.state import KeyedOperatorSnapshot, KeyedRestore, StateDescriptor, restore_keyed
from weirflow.time import MIN_WATERMARK

_MISSING = object()


class _KeyedBase(OperatorLogic):
    """A keyed operator whose only state is its keyed state backend."""

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        super().__init__(spec, ctx)
        self.key_fn = spec.key_fn
        self.scope = ctx.backend_scope(spec.name)
        self.backend = ctx.state_backend.create_keyed_backend(self.scope)
        self._key_group = KeyGroupCache(ctx.max_parallelism)
        self.key_class = KeyClassCheck(spec.state_id)

    def open(self, restored: KeyedRestore | None) -> None:
        """Restore the keyed state of this subtask's key groups."""
        if restored is not None:
            restore_keyed(self.backend, None, restored)
            self.key_class.restore(restored.key_class)

    def snapshot_state(self, checkpoint_id: int) -> KeyedOperatorSnapshot:
        """The keyed state's synchronous snapshot and the key class."""
        return KeyedOperatorSnapshot(
            self.backend.snapshot(checkpoint_id), key_class=self.key_class.record
        )

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Tell the keyed backend (incremental checkpoints reuse the completed one's files)."""
        self.backend.notify_checkpoint_complete(checkpoint_id)

    def close(self) -> None:
        """Release the keyed backend (its files, for RocksDB)."""
        self.backend.close()

    def _with_keys(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None,
    ) -> tuple[list[Any], list[int] | None, list[Any], list[Any] | None]:
        """Key the records not keyed by a channel; those whose key selector fails follow
        the error policy and leave the parallel lists. The first key since ``open`` is
        checked against the restored key class (:class:`KeyClassCheck`)."""
        if keys is None:
            key_fn = self.key_fn
            assert key_fn is not None
            keys, kept = call_each(self, key_fn, values, timestamps, headers)
            if kept is not None:
                values = [values[i] for i in kept]
                timestamps = [timestamps[i] for i in kept] if timestamps is not None else None
                headers = [headers[i] for i in kept] if headers is not None else None
        if self.key_class.pending and keys:
            self.key_class.see(keys[0])
        return values, timestamps, keys, headers


class RollingReduceLogic(_KeyedBase):
    """``key_by(...).reduce(fn)``: emits the running reduction of the key after every record.

    State: table ``values``: ``key -> reduced value``.
    """

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        super().__init__(spec, ctx)
        self.values = self.backend.table("values")

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        self.records_in += len(values)
        values, timestamps, keys, headers = self._with_keys(values, timestamps, keys, headers)
        fn = self.spec.params["fn"]
        out: list[Any] = []
        out_ts: list[int] | None = [] if timestamps is not None else None
        out_h: list[Any] | None = [] if headers is not None else None
        for i, v in enumerate(values):
            k = keys[i]
            part = self.values.partition(self._key_group(k))
            acc = part.get(k, _MISSING)
            t = timestamps[i] if timestamps is not None else None
            if acc is _MISSING:
                new = v
            else:
                try:
                    new = fn(acc, v)
                except Exception as e:
                    h = headers[i] if headers is not None else ()
                    ok, new = call_with_policy(
                        self, lambda x, a=acc: fn(a, x), v, t, first_error=e, headers=h
                    )
                    if not ok:
                        continue
            part[k] = new
            out.append(new)
            if out_ts is not None:
                out_ts.append(t)  # type: ignore[arg-type]
            if out_h is not None:
                out_h.append(headers[i])  # type: ignore[index]
        self.output.emit(out, out_ts, out_h)


class TimerContext:
    """What a :class:`~weirflow.api.KeyedProcessFunction` sees for one record or timer.

    Attributes:
        timestamp: the record's event time (or the firing timer's time) in ms, or ``None``.
        current_key: the key being processed.
    """

    def __init__(self, logic: KeyedProcessLogic) -> None:
        self._logic = logic
        self.timestamp: int | None = None
        self.current_key: Any = None
        self._kg = 0

    def current_watermark(self) -> int:
        """The operator's current event-time watermark in ms."""
        return self._logic.watermark

    def current_processing_time(self) -> int:
        """Processing time in ms from the injected clock."""
        return self._logic.ctx.clock()

    def register_event_time_timer(self, timestamp_ms: int) -> None:
        """Call ``on_timer`` for the current key once the watermark reaches ``timestamp_ms``."""
        self._logic.timers.register_event_time_timer(self._kg, self.current_key, None, timestamp_ms)

    def delete_event_time_timer(self, timestamp_ms: int) -> None:
        """Delete the current key's event-time timer at ``timestamp_ms``, if any."""
        self._logic.timers.delete_event_time_timer(self._kg, self.current_key, None, timestamp_ms)

    def register_processing_time_timer(self, timestamp_ms: int) -> None:
        """Call ``on_timer`` for the current key once processing time reaches ``timestamp_ms``."""
        self._logic.timers.register_processing_time_timer(
            self._kg, self.current_key, None, timestamp_ms
        )

    def delete_processing_time_timer(self, timestamp_ms: int) -> None:
        """Delete the current key's processing-time timer at ``timestamp_ms``, if any."""
        self._logic.timers.delete_processing_time_timer(
            self._kg, self.current_key, None, timestamp_ms
        )


class RuntimeContext:
    """Given to ``KeyedProcessFunction.open``: declares keyed state.

    Attributes:
        subtask: the subtask index.
        parallelism: the operator's parallelism.
    """

    def __init__(self, logic: KeyedProcessLogic) -> None:
        self._logic = logic
        self.subtask = logic.ctx.subtask
        self.parallelism = logic.ctx.parallelism

    def get_state(self, descriptor: StateDescriptor) -> Any:
        """Return the Value/List/MapState of ``descriptor``, bound to the current key.

        Raises:
            StateSchemaError: the restored checkpoint recorded this state with
                another kind or a value (or map key) class this code's class
                cannot rebuild; the message names the operator, the state and
                the change, as ``weirflow upgrade-check`` does.
        """
        logic = self._logic
        record = state_record(descriptor)
        restored = logic.restored_states.get(descriptor.name)
        if restored is not None:
            changes = state_changes(descriptor.name, restored, record)
            if changes:
                raise StateSchemaError(
                    f"operator {logic.spec.state_id!r}: {'; '.join(changes)} (the state as the "
                    "restored checkpoint recorded it, against this code's declaration in open)"
                )
        logic.declared_states[descriptor.name] = record
        return logic.backend.get_state(descriptor)


class KeyedProcessLogic(_KeyedBase):
    """``key_by(...).process(fn)`` with keyed state and timers.

    ``fn`` is copied per subtask, so attributes set in ``open`` (state
    handles) are per subtask. Outputs of ``process_element`` carry the
    record's timestamp; outputs of ``on_timer`` carry the timer's.
    """

    uses_processing_time = True

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        super().__init__(spec, ctx)
        self.fn = copy.deepcopy(spec.params["fn"])
        self.timers = ctx.state_backend.create_timer_service(self.scope, self.backend)
        self.watermark = MIN_WATERMARK
        self.context = TimerContext(self)
        # what the function declared through its context (name -> record), and what the
        # restored checkpoint recorded: RuntimeContext.get_state compares the two
        self.declared_states: dict[str, StateRecord] = {}
        self.restored_states: dict[str, StateRecord] = {}

    def open(self, restored: KeyedRestore | None) -> None:
        """Restore state, timers and watermark, then call the function's ``open``.

        Raises:
            StateSchemaError: a restored value does not fit the class this code
                defines, or ``open`` declares a state whose restored kind or
                class does not fit (:meth:`RuntimeContext.get_state`); the
                message names the operator.
        """
        if restored is not None:
            try:
                restore_keyed(self.backend, self.timers, restored)
            except StateSchemaError as e:
                # the memory backend rebuilds values here: name the operator, as upgrade-check
                raise StateSchemaError(f"operator {self.spec.state_id!r}: {e}") from e
            if restored.watermark_ms is not None:
                self.watermark = restored.watermark_ms
            self.restored_states = restored.states
            self.key_class.restore(restored.key_class)
        opener = getattr(self.fn, "open", None)
        if opener is not None:
            opener(RuntimeContext(self))

    def snapshot_state(self, checkpoint_id: int) -> KeyedOperatorSnapshot:
        """Synchronous snapshots of keyed state and timers, the watermark and the declared
        states."""
        return KeyedOperatorSnapshot(
            self.backend.snapshot(checkpoint_id),
            self.timers.snapshot(checkpoint_id),
            self.watermark,
            self.declared_states,
            self.key_class.record,
        )

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        self.records_in += len(values)
        values, timestamps, keys, headers = self._with_keys(values, timestamps, keys, headers)
        ctx = self.context
        backend = self.backend
        process = self.fn.process_element

        def run(x: Any) -> list[Any]:
            return _materialize(process(x, ctx))

        out: list[Any] = []
        out_ts: list[int] | None = [] if timestamps is not None else None
        out_h: list[Any] | None = [] if headers is not None else None
        for i, v in enumerate(values):
            k = keys[i]
            kg = self._key_group(k)
            backend.set_current_key(k, kg)
            ctx.current_key = k
            ctx._kg = kg
            t = timestamps[i] if timestamps is not None else None
            ctx.timestamp = t
            h = headers[i] if headers is not None else ()
            ok, produced = call_with_policy(self, run, v, t, headers=h)
            if ok and produced:
                out.extend(produced)
                if out_ts is not None:
                    out_ts.extend([t] * len(produced))  # type: ignore[list-item]
                if out_h is not None:
                    out_h.extend([h] * len(produced))
        self.output.emit(out, out_ts, out_h)

    def _run_timers(self, fired: list[tuple[int, int, Any, Any]]) -> None:
        on_timer = getattr(self.fn, "on_timer", None)
        if on_timer is None:
            return
        ctx = self.context

        def fire(timestamp_ms: int) -> list[Any]:
            return _materialize(on_timer(timestamp_ms, ctx))

        out: list[Any] = []
        out_ts: list[int] = []
        for ts, kg, k, _ns in fired:
            self.backend.set_current_key(k, kg)
            ctx.current_key = k
            ctx._kg = kg
            ctx.timestamp = ts
            ok, produced = call_with_policy(self, fire, ts, ts)
            if ok and produced:
                out.extend(produced)
                out_ts.extend([ts] * len(produced))
        self.output.emit(out, out_ts)

    def on_watermark(self, watermark_ms: int) -> int | None:
        """Fire event-time timers up to the watermark, then forward it."""
        if watermark_ms <= self.watermark:
            return None
        self.watermark = watermark_ms
        fired = self.timers.advance_watermark(watermark_ms)
        if fired:
            self._run_timers(fired)
        return watermark_ms

    def on_processing_time(self, now_ms: int) -> None:
        """Fire processing-time timers up to ``now_ms``."""
        fired = self.timers.advance_processing_time(now_ms)
        if fired:
            self._run_timers(fired)


def _materialize(result: Iterable[Any] | None) -> list[Any]:
    return list(result) if result is not None else []
