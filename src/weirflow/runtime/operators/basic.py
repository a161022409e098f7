"""Stateless record-at-a-time operators: map, filter, flat_map, union, sink.

Each runs its user function over the whole batch in one comprehension (the
hot path) and falls back to record-by-record calls under the error policy
only when the batch raised.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress
from typing import Any

from weirflow.runtime.operators.base import OperatorLogic
from weirflow.runtime.operators.errors import call_with_policy


def _ts(timestamps: list[int] | None, i: int) -> int | None:
    return timestamps[i] if timestamps is not None else None


class MapLogic(OperatorLogic):
    """``map(fn)``: one output per input."""

    def process_batch(
        self, values: list[Any], timestamps: list[int] | None, keys: list[Any] | None
    ) -> None:
        self.records_in += len(values)
        fn: Callable[[Any], Any] = self.spec.params["fn"]
        try:
            out = [fn(v) for v in values]
        except Exception:
            out, kept_ts = [], [] if timestamps is not None else None
            for i, v in enumerate(values):
                ok, r = call_with_policy(self, fn, v, _ts(timestamps, i))
                if ok:
                    out.append(r)
                    if kept_ts is not None:
                        kept_ts.append(timestamps[i])  # type: ignore[index]
            timestamps = kept_ts
        self.output.emit(out, timestamps)


class FilterLogic(OperatorLogic):
    """``filter(predicate)``: keeps records whose predicate is truthy; counts the rest."""

    def process_batch(
        self, values: list[Any], timestamps: list[int] | None, keys: list[Any] | None
    ) -> None:
        self.records_in += len(values)
        fn: Callable[[Any], Any] = self.spec.params["fn"]
        try:
            keep = [fn(v) for v in values]
        except Exception:
            keep = []
            for i, v in enumerate(values):
                ok, r = call_with_policy(self, fn, v, _ts(timestamps, i))
                # a dead-lettered record is neither kept nor counted as filtered
                keep.append(bool(r) if ok else None)
            self.filtered += sum(1 for k in keep if k is False)
            keep = [bool(k) for k in keep]
        else:
            self.filtered += len(keep) - sum(1 for k in keep if k)
        out = list(compress(values, keep))
        self.output.emit(out, list(compress(timestamps, keep)) if timestamps is not None else None)


class FlatMapLogic(OperatorLogic):
    """``flat_map(fn)``: each item of the iterable ``fn`` returns is an output."""

    def process_batch(
        self, values: list[Any], timestamps: list[int] | None, keys: list[Any] | None
    ) -> None:
        self.records_in += len(values)
        fn: Callable[[Any], Any] = self.spec.params["fn"]
        out: list[Any] = []
        out_ts: list[int] | None = [] if timestamps is not None else None
        try:
            for i, v in enumerate(values):
                items = list(fn(v))
                out.extend(items)
                if out_ts is not None:
                    out_ts.extend([timestamps[i]] * len(items))  # type: ignore[index]
        except Exception:
            out, out_ts = [], [] if timestamps is not None else None
            for i, v in enumerate(values):
                ok, items = call_with_policy(self, lambda x: list(fn(x)), v, _ts(timestamps, i))
                if ok:
                    out.extend(items)
                    if out_ts is not None:
                        out_ts.extend([timestamps[i]] * len(items))  # type: ignore[index]
        self.output.emit(out, out_ts)


class UnionLogic(OperatorLogic):
    """``union(...)``: passes every input through unchanged."""

    def process_batch(
        self, values: list[Any], timestamps: list[int] | None, keys: list[Any] | None
    ) -> None:
        self.records_in += len(values)
        self.output.emit(values, timestamps)
