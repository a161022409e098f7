"""The logical graph: frozen descriptions of operators and the edges between them.

Building a dataflow only creates these descriptions; nothing runs. The
runtime later builds logic objects from them (``build``), so the same graph
can be compiled at any parallelism.

Invariants:
    * operator ids are dense, ``0 .. len(operators) - 1``, in creation order,
      so every edge points from a smaller id to a larger one (the graph is a DAG);
    * an edge's ``output`` names an output the upstream operator has
      (``main``, or a side output such as ``late`` or ``dead_letter``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from weirflow.errors import ConfigError
from weirflow.graph.policies import ErrorPolicy

Partitioning = Literal["forward", "key_by", "rebalance", "broadcast"]
OutputName = Literal["main", "late", "dead_letter"]

OPERATOR_KINDS = frozenset(
    {
        "source",
        "map",
        "filter",
        "flat_map",
        "union",
        "sink",
        "rolling_reduce",
        "keyed_process",
        "window",
    }
)


@dataclass(frozen=True)
class Edge:
    """A connection from an output of an upstream operator to a downstream operator.

    Attributes:
        upstream: id of the upstream operator.
        partitioning: how records are spread over the downstream subtasks.
        key_fn: the key selector, for ``key_by`` edges (``None`` otherwise).
        output: which output of the upstream operator feeds this edge.
    """

    upstream: int
    partitioning: Partitioning = "forward"
    key_fn: Callable[[Any], Any] | None = None
    output: OutputName = "main"


@dataclass(frozen=True)
class OperatorSpec:
    """A frozen description of one logical operator.

    Attributes:
        id: dense operator id (creation order).
        name: unique, human-readable name; used in logs, metrics and errors.
        kind: one of :data:`OPERATOR_KINDS`.
        inputs: the incoming edges (empty for sources).
        params: kind-specific parameters (the user function, the window
            assigner, the source or sink object …), read-only.
        on_error: the error policy for user functions.
        uid: the stable id of the operator's state when it differs from its
            name (so that the name can change); ``None``: the name is the id.
    """

    id: int
    name: str
    kind: str
    inputs: tuple[Edge, ...] = ()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    on_error: ErrorPolicy = "fail"
    uid: str | None = None

    @property
    def state_id(self) -> str:
        """The id checkpoints keep this operator's state under: ``uid``, else ``name``."""
        return self.uid or self.name

    @property
    def is_keyed(self) -> bool:
        """Whether the operator runs on a keyed stream (its input is a ``key_by`` edge)."""
        return any(e.partitioning == "key_by" for e in self.inputs)

    @property
    def key_fn(self) -> Callable[[Any], Any] | None:
        """The key selector of the operator's ``key_by`` input, or ``None``."""
        for e in self.inputs:
            if e.partitioning == "key_by":
                return e.key_fn
        return None


class LogicalGraph:
    """A growing, append-only list of operator descriptions (a DAG by construction).

    Args:
        name: the dataflow's name (the job name).
    """

    def __init__(self, name: str) -> None:
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(
                f"dataflow name {name!r} must be non-empty and use only letters, digits, "
                "'-', '_' and '.': it names checkpoint folders"
            )
        self.name = name
        self._operators: list[OperatorSpec] = []
        self._names: set[str] = set()
        self._state_ids: set[str] = set()

    @property
    def operators(self) -> tuple[OperatorSpec, ...]:
        """All operators in id order."""
        return tuple(self._operators)

    def add(
        self,
        kind: str,
        *,
        name: str | None = None,
        inputs: tuple[Edge, ...] = (),
        params: Mapping[str, Any] | None = None,
        on_error: ErrorPolicy = "fail",
        uid: str | None = None,
    ) -> OperatorSpec:
        """Append an operator and return its description.

        Args:
            kind: one of :data:`OPERATOR_KINDS`.
            name: unique name; default ``"<kind>_<id>"``.
            inputs: incoming edges; every upstream id must already exist.
            params: kind-specific parameters.
            on_error: error policy for the operator's user functions.
            uid: the stable id of the operator's state (default: its name).

        Returns:
            The new :class:`OperatorSpec`.

        Raises:
            ConfigError: unknown kind, duplicate name or state id, or an edge to
                an unknown operator.
        """
        if kind not in OPERATOR_KINDS:
            raise ConfigError(f"unknown operator kind {kind!r}")
        op_id = len(self._operators)
        name = name or f"{kind}_{op_id}"
        if name in self._names:
            raise ConfigError(
                f"operator name {name!r} is used twice in dataflow {self.name!r}; names must be "
                "unique because checkpoints find an operator's state by its name"
            )
        if (uid is not None and not uid.strip()) or (uid or name) in self._state_ids:
            raise ConfigError(
                f"the state id {uid or name!r} of operator {name!r} is empty or already "
                f"names the state of another operator of dataflow {self.name!r} (a uid= or a "
                "name=); give each operator its own"
            )
        for e in inputs:
            if not 0 <= e.upstream < op_id:
                raise ConfigError(f"edge from unknown operator id {e.upstream}")
        spec = OperatorSpec(
            id=op_id,
            name=name,
            kind=kind,
            inputs=inputs,
            params=MappingProxyType(dict(params or {})),
            on_error=on_error,
            uid=uid,
        )
        self._operators.append(spec)
        self._names.add(name)
        self._state_ids.add(spec.state_id)
        return spec

    def get(self, op_id: int) -> OperatorSpec:
        """Return the operator with id ``op_id``."""
        return self._operators[op_id]

    def downstream(self, op_id: int) -> list[tuple[OperatorSpec, Edge]]:
        """Return ``(operator, edge)`` for every edge leaving ``op_id``, in id order."""
        return [(op, e) for op in self._operators for e in op.inputs if e.upstream == op_id]
