"""Compilation of a logical graph into the physical plan: chains and network edges.

Operators joined by a chainable edge run in one task and pass batches by
function call. An edge is chainable when its downstream operator has exactly
this one input and the edge does not redistribute records: ``forward``
always, and at parallelism 1 every partitioning (one subtask owns every key
group, so ``key_by``, ``rebalance`` and ``broadcast`` all reduce to forward).
Every other edge becomes a network edge, carried by channels between tasks.

Each chain is a tree rooted at its head (a source, or an operator with a
network input): a non-head operator has exactly one input, which is chained.
The plan has ``parallelism`` subtasks of every chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from weirflow.errors import ConfigError
from weirflow.graph.logical import Edge, LogicalGraph, OperatorSpec

MAX_PARALLELISM_LIMIT = 32768


@dataclass(frozen=True)
class ChainSpec:
    """A set of operators run together in one task.

    Attributes:
        index: position of the chain in the plan (topological order of heads).
        head: id of the chain's first operator.
        operators: ids of every operator of the chain, head first, in id order.
    """

    index: int
    head: int
    operators: tuple[int, ...]


@dataclass(frozen=True)
class NetworkEdge:
    """A logical edge that crosses tasks.

    Attributes:
        upstream_chain: index of the chain holding the upstream operator.
        downstream_chain: index of the chain whose head consumes the edge.
        downstream_op: id of the consuming operator (the downstream chain's head).
        edge: the logical edge.
        input_index: the position of this edge among the downstream operator's inputs.
    """

    upstream_chain: int
    downstream_chain: int
    downstream_op: int
    edge: Edge
    input_index: int


@dataclass(frozen=True)
class PhysicalPlan:
    """The compiled plan: chains, network edges and parallelism.

    Attributes:
        job: the dataflow's name.
        parallelism: subtasks per chain.
        max_parallelism: number of key groups.
        chains: all chains, topologically ordered by head id.
        network_edges: every edge between chains.
        chained_edges: ``(upstream_op, downstream_op, edge)`` for edges inside chains.
    """

    job: str
    parallelism: int
    max_parallelism: int
    chains: tuple[ChainSpec, ...]
    network_edges: tuple[NetworkEdge, ...]
    chained_edges: tuple[tuple[int, int, Edge], ...]

    def chain_of(self, op_id: int) -> ChainSpec:
        """Return the chain containing operator ``op_id``."""
        for c in self.chains:
            if op_id in c.operators:
                return c
        raise KeyError(op_id)

    def inputs_of(self, chain_index: int) -> list[NetworkEdge]:
        """Network edges into ``chain_index``, ordered by input index."""
        return sorted(
            (n for n in self.network_edges if n.downstream_chain == chain_index),
            key=lambda n: n.input_index,
        )

    def outputs_of(self, chain_index: int) -> list[NetworkEdge]:
        """Network edges leaving ``chain_index``."""
        return [n for n in self.network_edges if n.upstream_chain == chain_index]


def is_chainable(edge: Edge, downstream: OperatorSpec, parallelism: int) -> bool:
    """Return whether ``edge`` into ``downstream`` can be a function call.

    Args:
        edge: the logical edge.
        downstream: the operator it feeds.
        parallelism: the job's parallelism.

    Returns:
        ``True`` when ``downstream`` has only this input and records stay in
        the same subtask (``forward``, or any partitioning at parallelism 1).
    """
    if len(downstream.inputs) != 1:
        return False
    return edge.partitioning == "forward" or parallelism == 1


def compile_plan(graph: LogicalGraph, parallelism: int, max_parallelism: int) -> PhysicalPlan:
    """Compile ``graph`` at ``parallelism``.

    Args:
        graph: the logical graph; must contain at least one source and one sink.
        parallelism: subtasks per operator, ≥ 1 and ≤ ``max_parallelism``.
        max_parallelism: number of key groups, ≥ 1.

    Returns:
        The :class:`PhysicalPlan`.

    Raises:
        ConfigError: bad parallelism, no source, no sink, or an operator whose
            main output is never consumed while it is not a sink.
    """
    if not 1 <= max_parallelism <= MAX_PARALLELISM_LIMIT:
        raise ConfigError(
            f"max_parallelism must be in 1..{MAX_PARALLELISM_LIMIT}, got {max_parallelism}"
        )
    if not 1 <= parallelism <= max_parallelism:
        raise ConfigError(
            f"parallelism must be in 1..max_parallelism ({max_parallelism}), got {parallelism}"
        )
    ops = graph.operators
    if not any(o.kind == "source" for o in ops):
        raise ConfigError(f"dataflow {graph.name!r} has no source: call flow.source(...)")
    if not any(o.kind == "sink" for o in ops):
        raise ConfigError(
            f"dataflow {graph.name!r} has no sink: results would go nowhere; call .sink(...)"
        )
    consumed = {e.upstream for o in ops for e in o.inputs if e.output == "main"}
    for o in ops:
        if o.kind != "sink" and o.id not in consumed:
            raise ConfigError(
                f"operator {o.name!r} of dataflow {graph.name!r} has no downstream operator: "
                "its results would go nowhere; add a .sink(...) or remove it"
            )
    chain_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    chained: list[tuple[int, int, Edge]] = []
    heads: list[int] = []
    for op in ops:
        if op.inputs and is_chainable(op.inputs[0], op, parallelism):
            head = chain_of[op.inputs[0].upstream]
            chained.append((op.inputs[0].upstream, op.id, op.inputs[0]))
        else:
            head = op.id
            heads.append(op.id)
            members[head] = []
        chain_of[op.id] = head
        members[head].append(op.id)
    index_of = {h: i for i, h in enumerate(heads)}
    chains = tuple(ChainSpec(index_of[h], h, tuple(members[h])) for h in heads)
    network: list[NetworkEdge] = []
    for op in ops:
        if op.id in index_of:
            for i, e in enumerate(op.inputs):
                network.append(
                    NetworkEdge(index_of[chain_of[e.upstream]], index_of[op.id], op.id, e, i)
                )
    return PhysicalPlan(
        job=graph.name,
        parallelism=parallelism,
        max_parallelism=max_parallelism,
        chains=chains,
        network_edges=tuple(network),
        chained_edges=tuple(chained),
    )
