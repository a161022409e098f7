"""The logical plan (frozen operator and edge descriptions) and its compilation
into the physical plan (chains, network edges)."""

from weirflow.graph.identity import STATEFUL_KINDS, is_named, operator_signatures
from weirflow.graph.logical import (
    OPERATOR_KINDS,
    Edge,
    LogicalGraph,
    OperatorSpec,
    OutputName,
    Partitioning,
)
from weirflow.graph.physical import (
    ChainSpec,
    NetworkEdge,
    PhysicalPlan,
    compile_plan,
    is_chainable,
)
from weirflow.graph.policies import ErrorPolicy, OnError, RetryPolicy, check_error_policy

__all__ = [
    "OPERATOR_KINDS",
    "STATEFUL_KINDS",
    "ChainSpec",
    "Edge",
    "ErrorPolicy",
    "LogicalGraph",
    "NetworkEdge",
    "OnError",
    "OperatorSpec",
    "OutputName",
    "Partitioning",
    "PhysicalPlan",
    "RetryPolicy",
    "check_error_policy",
    "compile_plan",
    "is_chainable",
    "is_named",
    "operator_signatures",
]
