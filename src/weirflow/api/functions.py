"""User-function base classes (Flink's shapes, in Python)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

IN = TypeVar("IN")
OUT = TypeVar("OUT")
ACC = TypeVar("ACC")


class AggregateFunction(Generic[IN, ACC, OUT]):
    """Incremental window aggregation (Flink's ``AggregateFunction``).

    ``add`` and ``merge`` may return a new accumulator or the updated one;
    the accumulator is window state, so it must be plain data or picklable.
    ``merge`` is used by session windows when windows merge.
    """

    def create_accumulator(self) -> ACC:
        """Return an empty accumulator."""
        raise NotImplementedError  # abstract

    def add(self, value: IN, accumulator: ACC) -> ACC:
        """Fold ``value`` into ``accumulator`` and return the accumulator."""
        raise NotImplementedError  # abstract

    def get_result(self, accumulator: ACC) -> OUT:
        """Return the window's result from its accumulator."""
        raise NotImplementedError  # abstract

    def merge(self, a: ACC, b: ACC) -> ACC:
        """Combine two accumulators (session-window merges)."""
        raise NotImplementedError  # abstract


class KeyedProcessFunction(Generic[IN, OUT]):
    """A function over a keyed stream with keyed state and timers (Flink's KeyedProcessFunction).

    Declare state in :meth:`open` with ``ctx.get_state(ValueStateDescriptor(...))``
    (or List/Map descriptors) and keep the returned handles as attributes;
    they act on the key of the record or timer being processed. Hold the
    descriptors themselves as class attributes (``CART = ValueStateDescriptor(...)``,
    then ``ctx.get_state(self.CART)``) so that ``weirflow upgrade-check`` can
    check them against a savepoint without running ``open``. The function
    object is copied per subtask.
    """

    def open(self, ctx: Any) -> None:
        """Declare state. ``ctx`` has ``get_state(descriptor)``, ``subtask``, ``parallelism``."""

    def process_element(self, value: IN, ctx: Any) -> Iterable[OUT] | None:
        """Process one record; return (or yield) outputs.

        ``ctx`` has ``timestamp`` (event time in ms or ``None``), ``current_key``,
        ``current_watermark()``, ``current_processing_time()``,
        ``register_event_time_timer(ts_ms)``, ``register_processing_time_timer(ts_ms)``
        and the matching ``delete_*`` methods.
        """
        raise NotImplementedError  # abstract

    def on_timer(self, timestamp_ms: int, ctx: Any) -> Iterable[OUT] | None:
        """A timer of ``ctx.current_key`` fired at ``timestamp_ms``; return (or yield) outputs."""
        return None
