"""Stateless record-at-a-time operators: map, filter, flat_map, union, sink.

Each runs its user function over the whole batch in one loop (the hot path);
a record whose call raises is handed to the error policy and the loop goes
on with the next record (:func:`~weirflow.runtime.operators.errors.call_each`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress
from typing import Any

from weirflow.runtime.operators.base import OperatorLogic
from weirflow.runtime.operators.errors import call_each


def _subset(column: list[Any] | None, kept: list[int]) -> list[Any] | None:
    """The entries of a parallel list (timestamps, headers) at the ``kept`` indices."""
    return [column[i] for i in kept] if column is not None else None


class MapLogic(OperatorLogic):
    """``map(fn)``: one output per input."""

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        self.records_in += len(values)
        fn: Callable[[Any], Any] = self.spec.params["fn"]
        out, kept = call_each(self, fn, values, timestamps, headers)
        if kept is not None:
            timestamps = _subset(timestamps, kept)
            headers = _subset(headers, kept)
        self.output.emit(out, timestamps, headers)


class FilterLogic(OperatorLogic):
    """``filter(predicate)``: keeps records whose predicate is truthy; counts the rest.

    A dead-lettered record is neither kept nor counted as filtered.
    """

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        self.records_in += len(values)
        fn: Callable[[Any], Any] = self.spec.params["fn"]
        keep, kept = call_each(self, fn, values, timestamps, headers)
        if kept is not None:
            values = [values[i] for i in kept]
            timestamps = _subset(timestamps, kept)
            headers = _subset(headers, kept)
        passed = [bool(k) for k in keep]
        self.filtered += len(passed) - sum(passed)
        out = list(compress(values, passed))
        self.output.emit(
            out,
            list(compress(timestamps, passed)) if timestamps is not None else None,
            list(compress(headers, passed)) if headers is not None else None,
        )


class FlatMapLogic(OperatorLogic):
    """``flat_map(fn)``: each item of the iterable ``fn`` returns is an output."""

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        self.records_in += len(values)
        fn: Callable[[Any], Iterable[Any]] = self.spec.params["fn"]
        # materialised inside the call, so an error while iterating is this record's error
        produced, kept = call_each(self, lambda v: list(fn(v)), values, timestamps, headers)
        out: list[Any] = []
        out_ts: list[int] | None = [] if timestamps is not None else None
        out_h: list[Any] | None = [] if headers is not None else None
        for j, items in enumerate(produced):
            out.extend(items)
            i = j if kept is None else kept[j]
            if out_ts is not None:
                out_ts.extend([timestamps[i]] * len(items))  # type: ignore[index]
            if out_h is not None:
                out_h.extend([headers[i]] * len(items))  # type: ignore[index]
        self.output.emit(out, out_ts, out_h)


class UnionLogic(OperatorLogic):
    """``union(...)``: passes every input through unchanged."""

    def process_batch(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None = None,
    ) -> None:
        self.records_in += len(values)
        self.output.emit(values, timestamps, headers)
