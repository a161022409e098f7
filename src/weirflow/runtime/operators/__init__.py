"""Operator implementations: logic objects built from the graph's frozen descriptions."""

from __future__ import annotations

from weirflow.errors import ConfigError
from weirflow.graph import OperatorSpec
from weirflow.runtime.operators.base import (
    OperatorContext,
    OperatorLogic,
    Output,
    OutputTargets,
    deliver,
)
from weirflow.runtime.operators.basic import FilterLogic, FlatMapLogic, MapLogic, UnionLogic
from weirflow.runtime.operators.count_window import CountWindowLogic
from weirflow.runtime.operators.keyed import KeyedProcessLogic, RollingReduceLogic
from weirflow.runtime.operators.source import SinkLogic, SourceLogic
from weirflow.runtime.operators.window import WindowLogic
from weirflow.time import CountWindows

_BY_KIND: dict[str, type[OperatorLogic]] = {
    "source": SourceLogic,
    "map": MapLogic,
    "filter": FilterLogic,
    "flat_map": FlatMapLogic,
    "union": UnionLogic,
    "sink": SinkLogic,
    "rolling_reduce": RollingReduceLogic,
    "keyed_process": KeyedProcessLogic,
}


def build_logic(spec: OperatorSpec, ctx: OperatorContext) -> OperatorLogic:
    """Build the logic object of one subtask of ``spec``.

    Raises:
        ConfigError: an operator kind without an implementation.
    """
    if spec.kind == "window":
        if isinstance(spec.params["assigner"], CountWindows):
            return CountWindowLogic(spec, ctx)
        return WindowLogic(spec, ctx)
    cls = _BY_KIND.get(spec.kind)
    if cls is None:
        raise ConfigError(f"no implementation for operator kind {spec.kind!r}")
    return cls(spec, ctx)


__all__ = [
    "OperatorContext",
    "OperatorLogic",
    "Output",
    "OutputTargets",
    "SinkLogic",
    "SourceLogic",
    "build_logic",
    "deliver",
]
