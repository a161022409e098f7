"""The event-time window operator: tumbling, sliding and session windows.

State (declared, snapshotted per key group):
    * ``windows``: ``(key, namespace) -> accumulator``; the namespace is the
      window start for tumbling and sliding windows and ``(start, end)`` for
      session windows;
    * ``sessions``: ``key -> [(start, end), ...]`` (session windows only);
    * ``firings``: ``(key, namespace) -> firings so far`` (only with allowed lateness);
    * timers: one event-time timer per window at its max timestamp
      (``end - 1``), plus a clean-up timer at ``end - 1 + allowed_lateness``;
    * the operator's current watermark (operator state).

Semantics follow Flink's event-time windows: a window fires when the
watermark reaches ``end - 1``; a record whose every window satisfies
``end - 1 + allowed_lateness <= watermark`` is late and goes to the ``late``
side output (a sliding-window record late for some of its windows only is
set aside for those, one :class:`~weirflow.records.LateRecord` per window); a
record that is late for its window but within the allowed lateness updates
the window and re-fires it at once (``firing`` 1, 2, …); the window's state
is dropped at ``end - 1 + allowed_lateness``.
"""

from __future__ import annotations

from typing import Any

from weirflow.errors import OperatorError
from weirflow.graph import OperatorSpec
from weirflow.records import LateRecord, WindowResult
from weirflow.runtime.keycache import KeyGroupCache
from weirflow.runtime.operators.accumulate import accumulation_for
from weirflow.runtime.operators.base import OperatorContext, OperatorLogic
from weirflow.runtime.operators.errors import call_each, call_with_policy
from weirflow.runtime.operators.keyclass import KeyClassCheck
from weirflow.state import KeyedOperatorSnapshot, KeyedRestore, restore_keyed
from weirflow.time import MIN_WATERMARK, SessionWindows, TumblingWindows

LATE = "late"
_MISSING = object()


class WindowLogic(OperatorLogic):
    """Keyed event-time windows with a window function.

    ``spec.params``: ``assigner``, ``allowed_lateness_ms`` (int),
    ``function`` (``reduce`` | ``aggregate`` | ``count`` | ``process``), ``fn``.
    """

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        super().__init__(spec, ctx)
        self.assigner = spec.params["assigner"]
        self.lateness = int(spec.params.get("allowed_lateness_ms", 0))
        self.acc = accumulation_for(spec.params["function"], spec.params.get("fn"))
        self.key_fn = spec.key_fn
        scope = ctx.backend_scope(spec.name)
        self.backend = ctx.state_backend.create_keyed_backend(scope)
        self.windows = self.backend.table("windows")
        self.sessions = self.backend.table("sessions")
        self.firings = self.backend.table("firings")
        self.timers = ctx.state_backend.create_timer_service(scope, self.backend)
        self.watermark = MIN_WATERMARK
        self._key_group = KeyGroupCache(ctx.max_parallelism)
        self._kg = self._key_group.groups
        self.key_class = KeyClassCheck(spec.state_id)
        self._bind_parts()

    # -- state ---------------------------------------------------------------

    def open(self, restored: KeyedRestore | None) -> None:
        """Restore keyed state and timers (blobs per key group) and the watermark."""
        if restored is None:
            return
        restore_keyed(self.backend, self.timers, restored)
        if restored.watermark_ms is not None:
            self.watermark = restored.watermark_ms
        self.key_class.restore(restored.key_class)
        self._bind_parts()

    def snapshot_state(self, checkpoint_id: int) -> KeyedOperatorSnapshot:
        """Synchronous snapshots of state and timers; encoding happens later, off the hot path."""
        return KeyedOperatorSnapshot(
            self.backend.snapshot(checkpoint_id),
            self.timers.snapshot(checkpoint_id),
            self.watermark,
            key_class=self.key_class.record,
        )

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Tell the keyed backend (incremental checkpoints reuse the completed one's files)."""
        self.backend.notify_checkpoint_complete(checkpoint_id)

    def close(self) -> None:
        """Release the keyed backend (its files, for RocksDB)."""
        self.backend.close()

    # -- records -------------------------------------------------------------

    def _bind_parts(self) -> None:
        """Index the live per-key-group dicts of ``windows`` by key group (hot-path access)."""
        self._parts = [
            self.windows.partition(kg) if kg in self.ctx.key_group_range else None
            for kg in range(self.ctx.max_parallelism)
        ]

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        """Assign records to windows; a window's result is a new record that carries no
        input's headers (the span of each input buffer links its records' traces)."""
        self.records_in += len(values)
        if timestamps is None:
            raise OperatorError(
                f"{self.task_name}: event-time windows need timestamps; pass timestamp= (and "
                "watermarks=) to flow.source(...)",
                operator=self.name,
                subtask=self.ctx.subtask,
                parallelism=self.ctx.parallelism,
                record=values[0] if values else None,
            )
        if keys is None:
            assert self.key_fn is not None
            keys, kept = call_each(self, self.key_fn, values, timestamps, headers)
            if kept is not None:
                values = [values[i] for i in kept]
                timestamps = [timestamps[i] for i in kept]
                headers = [headers[i] for i in kept] if headers is not None else None
        if self.key_class.pending and keys:
            self.key_class.see(keys[0])
        if type(self.assigner) is TumblingWindows:
            self._tumbling(values, timestamps, keys, headers)
        elif isinstance(self.assigner, SessionWindows):
            self._sessions(values, timestamps, keys, headers)
        else:
            self._sliding(values, timestamps, keys, headers)

    def _tumbling(
        self,
        values: list[Any],
        timestamps: list[int],
        keys: list[Any],
        headers: list[Any] | None,
    ) -> None:
        size = self.assigner.size_ms
        offset = self.assigner.offset_ms
        lateness = self.lateness
        wm = self.watermark
        first, add = self.acc.first, self.acc.add
        parts = self._parts
        kg_cache = self._kg
        register = self.timers.register_event_time_timer
        late: list[tuple[int, int | None, int | None]] | None = None
        refire: list[tuple[int, Any, int]] | None = None
        for i, t in enumerate(timestamps):
            k = keys[i]
            kg = kg_cache.get(k)
            if kg is None:
                kg = self._key_group(k)
            start = t - (t - offset) % size
            last = start + size - 1
            if last + lateness <= wm:
                if late is None:
                    late = []
                late.append((i, start, start + size))
                continue
            part = parts[kg]
            wk = (k, start)
            acc = part.get(wk, _MISSING)
            try:
                if acc is _MISSING:
                    # a window born after the watermark passed its end fires in _fire
                    # below; its only timer is the clean-up one. Registered before the
                    # window function runs, so a retried first record still fires (a
                    # timer of a window without state does nothing).
                    register(kg, k, start, last if last > wm else last + lateness)
                    part[wk] = first(values[i])
                else:
                    part[wk] = add(acc, values[i])
            except Exception as e:
                h = headers[i] if headers is not None else ()
                self._function_failed(part, wk, acc, values[i], t, e, h)
            if last <= wm:
                if refire is None:
                    refire = []
                refire.append((kg, k, start))
        if late:
            self._emit_late(values, timestamps, late)
        if refire:
            self._fire(refire, late_firing=True)

    def _sliding(
        self,
        values: list[Any],
        timestamps: list[int],
        keys: list[Any],
        headers: list[Any] | None,
    ) -> None:
        lateness = self.lateness
        wm = self.watermark
        first, add = self.acc.first, self.acc.add
        size = self.assigner.size_ms
        slide = self.assigner.slide_ms
        offset = self.assigner.offset_ms
        parts = self._parts
        kg_cache = self._kg
        register = self.timers.register_event_time_timer
        late: list[tuple[int, int | None, int | None]] = []
        refire: list[tuple[int, Any, int]] = []
        for i, t in enumerate(timestamps):
            k = keys[i]
            kg = kg_cache.get(k)
            if kg is None:
                kg = self._key_group(k)
            part = parts[kg]
            # the window starts of SlidingWindows.assign, by arithmetic: no
            # TimeWindow objects on this per-record path
            last_start = t - (t - offset) % slide
            first_start = last_start - (size - 1 - (t - last_start)) // slide * slide
            for start in range(first_start, last_start + 1, slide):
                last = start + size - 1
                if last + lateness <= wm:
                    # late for this window only: set aside per window, never silently
                    late.append((i, start, start + size))
                    continue
                wk = (k, start)
                acc = part.get(wk, _MISSING)
                try:
                    if acc is _MISSING:
                        register(kg, k, start, last if last > wm else last + lateness)
                        part[wk] = first(values[i])
                    else:
                        part[wk] = add(acc, values[i])
                except Exception as e:
                    h = headers[i] if headers is not None else ()
                    self._function_failed(part, wk, acc, values[i], t, e, h)
                if last <= wm:
                    refire.append((kg, k, start))
        if late:
            self._emit_late(values, timestamps, late)
        if refire:
            self._fire(refire, late_firing=True)

    def _sessions(
        self,
        values: list[Any],
        timestamps: list[int],
        keys: list[Any],
        headers: list[Any] | None,
    ) -> None:
        gap = self.assigner.gap_ms
        lateness = self.lateness
        first, add, merge = self.acc.first, self.acc.add, self.acc.merge
        late: list[tuple[int, int | None, int | None]] = []
        refire: list[tuple[int, Any, Any]] = []
        timers = self.timers
        for i, t in enumerate(timestamps):
            k = keys[i]
            kg = self._key_group(k)
            part = self._parts[kg]
            spart = self.sessions.partition(kg)
            existing: list[tuple[int, int]] = spart.get(k, [])
            start, end = t, t + gap
            overlapping = [w for w in existing if w[0] <= end and w[1] >= start]
            for w in overlapping:
                start, end = min(start, w[0]), max(end, w[1])
            if end - 1 + lateness <= self.watermark:
                late.append((i, None, None))
                continue
            acc: Any = _MISSING
            fired = 0
            for w in overlapping:
                wacc = part.pop((k, w))
                acc = wacc if acc is _MISSING else merge(acc, wacc)
                timers.delete_event_time_timer(kg, k, w, w[1] - 1)
                if lateness:
                    timers.delete_event_time_timer(kg, k, w, w[1] - 1 + lateness)
                    fired = max(fired, self.firings.partition(kg).pop((k, w), 0))
            try:
                acc = first(values[i]) if acc is _MISSING else add(acc, values[i])
            except Exception as e:
                fn = first if acc is _MISSING else (lambda v, a=acc: add(a, v))
                h = headers[i] if headers is not None else ()
                ok, new = call_with_policy(self, fn, values[i], t, first_error=e, headers=h)
                if ok:
                    acc = new
                elif acc is _MISSING:
                    continue
            window = (start, end)
            part[(k, window)] = acc
            if fired:
                self.firings.partition(kg)[(k, window)] = fired
            spart[k] = [w for w in existing if w not in overlapping] + [window]
            timers.register_event_time_timer(
                kg, k, window, end - 1 if end - 1 > self.watermark else end - 1 + lateness
            )
            if end - 1 <= self.watermark:
                refire.append((kg, k, window))
        if late:
            self._emit_late(values, timestamps, late)
        if refire:
            self._fire(refire, late_firing=True)

    # -- errors and side outputs --------------------------------------------

    def _function_failed(
        self,
        part: dict,
        wk: Any,
        acc: Any,
        value: Any,
        t: int,
        error: Exception,
        headers: tuple[tuple[str, bytes], ...],
    ) -> None:
        """The window function raised on ``value``: retry, dead-letter (with the record's
        ``headers``) or fail per policy."""
        fn = self.acc.first if acc is _MISSING else (lambda v: self.acc.add(acc, v))
        ok, new = call_with_policy(self, fn, value, t, first_error=error, headers=headers)
        if ok:
            part[wk] = new

    def _emit_late(
        self,
        values: list[Any],
        timestamps: list[int],
        late: list[tuple[int, int | None, int | None]],
    ) -> None:
        """Route late records aside: one per record and window it was too late for."""
        self.late += len(late)
        wm = self.watermark
        self.output.emit_side(
            LATE,
            [LateRecord(values[i], timestamps[i], wm, self.name, s, e) for i, s, e in late],
            [timestamps[i] for i, _, _ in late],
        )

    # -- time ----------------------------------------------------------------

    def on_watermark(self, watermark_ms: int) -> int | None:
        """Fire every window whose end the watermark passed; drop state past the lateness."""
        if watermark_ms <= self.watermark:
            return None
        self.watermark = watermark_ms
        fired = self.timers.advance_watermark(watermark_ms)
        if fired:
            self._on_timers(fired)
        return watermark_ms

    def _window_bounds(self, ns: Any) -> tuple[int, int]:
        if type(ns) is tuple:
            return ns
        return ns, ns + self.assigner.size_ms

    def _on_timers(self, fired: list[tuple[int, int, Any, Any]]) -> None:
        to_fire: list[tuple[int, Any, Any]] = []
        cleanup: list[tuple[int, Any, Any]] = []
        for ts, kg, k, ns in fired:
            _start, end = self._window_bounds(ns)
            if ts == end - 1:
                to_fire.append((kg, k, ns))
                if self.lateness and end - 1 + self.lateness > self.watermark:
                    self.timers.register_event_time_timer(kg, k, ns, end - 1 + self.lateness)
                else:
                    cleanup.append((kg, k, ns))
            else:
                cleanup.append((kg, k, ns))
        if to_fire:
            self._fire(to_fire, late_firing=False)
        for kg, k, ns in cleanup:
            self._drop(kg, k, ns)

    def _drop(self, kg: int, k: Any, ns: Any) -> None:
        self._parts[kg].pop((k, ns), None)
        if self.lateness:
            self.firings.partition(kg).pop((k, ns), None)
        if type(ns) is tuple:
            spart = self.sessions.partition(kg)
            rest = [w for w in spart.get(k, []) if w != ns]
            if rest:
                spart[k] = rest
            else:
                spart.pop(k, None)

    def _fire(self, windows: list[tuple[int, Any, Any]], late_firing: bool) -> None:
        if late_firing:
            # several late records of one batch update a window once, then it fires once
            windows = list(dict.fromkeys(windows))
        result = self.acc.result
        out: list[WindowResult] = []
        out_ts: list[int] = []
        for kg, k, ns in windows:
            acc = self._parts[kg].get((k, ns), _MISSING)
            if acc is _MISSING:
                continue
            start, end = self._window_bounds(ns)
            firing = 0
            if self.lateness:
                fparts = self.firings.partition(kg)
                firing = fparts.get((k, ns), 0)
                fparts[(k, ns)] = firing + 1
            out.append(WindowResult(k, start, end, result(k, start, end, acc), firing))
            out_ts.append(end - 1)
        self.output.emit(out, out_ts)
