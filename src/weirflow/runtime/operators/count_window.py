"""Count windows: per key, fire every ``size`` (or ``slide``) records over the last ``size``.

State: table ``buffers``: ``key -> [count, [(value, timestamp_ms), ...]]``,
holding at most ``size`` records per key. Results are
:class:`~weirflow.records.WindowResult` whose ``start_ms``/``end_ms`` are the
smallest timestamp and the largest timestamp + 1 of the window's records
(0 and 0 without event time).
"""

from __future__ import annotations

from typing import Any

from weirflow.graph import OperatorSpec
from weirflow.records import WindowResult
from weirflow.runtime.operators.accumulate import accumulation_for
from weirflow.runtime.operators.base import OperatorContext
from weirflow.runtime.operators.errors import call_with_policy
from weirflow.runtime.operators.keyed import _KeyedBase
from weirflow.time import CountWindows


class CountWindowLogic(_KeyedBase):
    """``key_by(...).window(CountWindows(size, slide))`` with a window function."""

    def __init__(self, spec: OperatorSpec, ctx: OperatorContext) -> None:
        super().__init__(spec, ctx)
        self.assigner: CountWindows = spec.params["assigner"]
        self.acc = accumulation_for(spec.params["function"], spec.params.get("fn"))
        self.buffers = self.backend.table("buffers")

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        """Count windows: a result is a new record and carries no input's headers."""
        self.records_in += len(values)
        values, timestamps, keys, _ = self._with_keys(values, timestamps, keys, headers)
        size = self.assigner.size
        out: list[WindowResult] = []
        out_ts: list[int] = []
        for i, v in enumerate(values):
            k = keys[i]
            part = self.buffers.partition(self._key_group(k))
            t = timestamps[i] if timestamps is not None else 0
            entry = part.get(k)
            if entry is None:
                entry = part[k] = [0, []]
            entry[0] += 1
            entry[1].append((v, t))
            if len(entry[1]) > size:
                del entry[1][0]
            if self.assigner.fires_at(entry[0]):
                window = entry[1][-self.assigner.window_length(entry[0]) :]
                ok, result = call_with_policy(self, lambda w, k=k: self._result(k, w), window, t)
                if ok:
                    out.append(result)
                    out_ts.append(result.end_ms - 1 if timestamps is not None else 0)
                if not self.assigner.is_sliding:
                    del part[k]
        self.output.emit(out, out_ts if timestamps is not None else None)

    def _result(self, key: Any, window: list[tuple[Any, int]]) -> WindowResult:
        first, add = self.acc.first, self.acc.add
        acc = first(window[0][0])
        for v, _ in window[1:]:
            acc = add(acc, v)
        start = min(t for _, t in window)
        end = max(t for _, t in window) + 1
        return WindowResult(key, start, end, self.acc.result(key, start, end, acc), 0)
