"""Window functions reduced to four calls: ``first``, ``add``, ``merge``, ``result``.

``reduce``, ``aggregate``, ``count`` and ``process`` (all records of the
window) differ only in these four; the window operator is written once
against them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weirflow.errors import ConfigError
from weirflow.time import TimeWindow


@dataclass(frozen=True)
class Accumulation:
    """How a window turns records into a result.

    Attributes:
        first: ``record -> acc`` for the first record of a window.
        add: ``(acc, record) -> acc``.
        merge: ``(acc, acc) -> acc`` for merging (session) windows.
        result: ``(key, window_start_ms, window_end_ms, acc) -> value`` emitted.
    """

    first: Callable[[Any], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any]
    result: Callable[[Any, int, int, Any], Any]


def _append(acc: list[Any], v: Any) -> list[Any]:
    acc.append(v)
    return acc


def accumulation_for(function: str, fn: Any) -> Accumulation:
    """Build the :class:`Accumulation` of a window function.

    Args:
        function: ``"reduce"`` (``fn(a, b) -> a``), ``"aggregate"`` (an object
            with Flink's ``create_accumulator()``, ``add(value, acc)``,
            ``merge(a, b)``, ``get_result(acc)``), ``"count"`` (``fn`` unused)
            or ``"process"`` (``fn(key, window, records) -> value``).
        fn: the user function or object.

    Returns:
        The accumulation.

    Raises:
        ConfigError: unknown ``function`` or an aggregate lacking a method.
    """
    if function == "reduce":
        return Accumulation(lambda v: v, fn, fn, lambda k, s, e, acc: acc)
    if function == "count":
        return Accumulation(lambda v: 1, lambda acc, v: acc + 1, int.__add__, lambda k, s, e, a: a)
    if function == "aggregate":
        for m in ("create_accumulator", "add", "merge", "get_result"):
            if not callable(getattr(fn, m, None)):
                raise ConfigError(
                    f"aggregate() needs an AggregateFunction with {m}(); got {type(fn).__name__}"
                )
        create, add, get = fn.create_accumulator, fn.add, fn.get_result
        return Accumulation(
            lambda v: add(v, create()),
            lambda acc, v: add(v, acc),
            fn.merge,
            lambda k, s, e, acc: get(acc),
        )
    if function == "process":
        return Accumulation(
            lambda v: [v],
            _append,
            lambda a, b: a + b,
            lambda k, s, e, acc: fn(k, TimeWindow(s, e), acc),
        )
    raise ConfigError(f"unknown window function {function!r}")
