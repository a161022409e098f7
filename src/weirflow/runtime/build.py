"""Building the runnable job from a physical plan: logic objects, channels, writers, tasks."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from weirflow.connectors.ramped import RampedSource
from weirflow.graph import LogicalGraph, OperatorSpec, PhysicalPlan
from weirflow.metrics import BatchTracer
from weirflow.runtime.channel import Channel
from weirflow.runtime.operators import OperatorContext, OperatorLogic, build_logic
from weirflow.runtime.partitioners import RecordWriter
from weirflow.runtime.task import SnapshotCallback, Task
from weirflow.state import MemoryStateBackend, StateBackend, key_group_range_for_subtask


@dataclass(frozen=True)
class RuntimeOptions:
    """How the runtime runs subtasks: sizes of its bounded pieces, and the state backend.

    Attributes:
        source_batch_size: records a source subtask reads per step.
        buffer_size: records per network buffer.
        channel_capacity: buffers a channel holds (the credit per channel).
        state_backend: where keyed operators keep state and timers.
        startup_ramp_s: after a restore, seconds over which each source
            subtask ramps its read rate up to full speed (``None``: at once;
            :class:`~weirflow.connectors.ramped.RampedSource`).
        ramp_start_rate: records/s a source subtask's ramp starts from.
        tracing: continue W3C trace contexts found in record headers, with one
            span per buffer of records and operator (needs ``weirflow[otel]``;
            :mod:`weirflow.metrics.tracing`). Off, records carry no headers.
    """

    source_batch_size: int = 1024
    buffer_size: int = 1024
    channel_capacity: int = 4
    state_backend: StateBackend = field(default_factory=MemoryStateBackend)
    startup_ramp_s: float | None = None
    ramp_start_rate: int = 1000
    tracing: bool = False


class RemoteEnds(Protocol):
    """Where a worker gets the ends of channels whose other end runs in another worker."""

    def owner(self, subtask: int) -> str | None:
        """Return the worker hosting ``subtask``, or ``None`` when it runs here."""
        ...

    def output(self, channel_id: int, capacity: int, name: str, peer: str) -> Any:
        """Return the sending end of ``channel_id`` towards worker ``peer``."""
        ...

    def input(self, channel_id: int, capacity: int, name: str, peer: str) -> Channel:
        """Return the receiving end of ``channel_id`` from worker ``peer``."""
        ...


@dataclass
class BuiltJob:
    """The runnable pieces of one job attempt (in one worker: the subtasks it hosts).

    Attributes:
        tasks: the tasks built, sources first (plan order), subtasks in order.
        channels: the channels whose receiving end is here.
        logic: ``operator id -> {subtask: logic}`` for the subtasks built.
    """

    tasks: list[Task]
    channels: list[Channel]
    logic: dict[int, dict[int, OperatorLogic]]


def build_job(
    graph: LogicalGraph,
    plan: PhysicalPlan,
    options: RuntimeOptions,
    clock: Callable[[], int],
    sleep: Callable[[float], None],
    on_snapshot: SnapshotCallback,
    restored: Mapping[str, Mapping[int, Any]] | None = None,
    guarantee: str = "exactly_once",
    subtasks: Collection[int] | None = None,
    remote: RemoteEnds | None = None,
) -> BuiltJob:
    """Instantiate the subtasks of ``plan`` that run here.

    Steps:
        1. build one logic object per operator per local subtask;
        2. wire chained edges as direct calls;
        3. create channels and record writers for network edges (a channel
           with one end in another worker gets a remote end from ``remote``);
        4. create tasks and open them with their restored state.

    Args:
        graph: the logical graph.
        plan: its compiled plan.
        options: buffer and batch sizes.
        clock: processing time in ms.
        sleep: blocking wait (retry backoff).
        on_snapshot: where tasks report snapshots.
        restored: ``operator name -> subtask -> state`` as redistributed for
            this plan's parallelism, or ``None`` for a fresh start.
        guarantee: the delivery guarantee, given to every operator.
        subtasks: the subtask indices (of every chain) built here; ``None``: all.
        remote: the remote channel ends; needed when ``subtasks`` leaves some out.

    Returns:
        The :class:`BuiltJob`.
    """
    p = plan.parallelism
    local = set(range(p)) if subtasks is None else set(subtasks)
    if remote is None and len(local) < p:
        raise ValueError("building part of a plan needs remote channel ends")
    logic: dict[int, dict[int, OperatorLogic]] = {}
    tracer = BatchTracer(plan.job) if options.tracing else None
    for op in graph.operators:
        spec = _ramped(op, options) if restored is not None else op
        logic[op.id] = {
            i: build_logic(
                spec,
                OperatorContext(
                    job=plan.job,
                    subtask=i,
                    parallelism=p,
                    max_parallelism=plan.max_parallelism,
                    key_group_range=key_group_range_for_subtask(plan.max_parallelism, p, i),
                    clock=clock,
                    sleep=sleep,
                    guarantee=guarantee,
                    state_backend=options.state_backend,
                    tracer=tracer,
                ),
            )
            for i in sorted(local)
        }
    for up, down, edge in plan.chained_edges:
        for i in local:
            logic[up][i].output.targets(edge.output).chained.append(logic[down][i])
    channels: list[Channel] = []
    inputs: dict[tuple[int, int], list[Channel]] = {}
    writers: dict[tuple[int, int], list[RecordWriter]] = {}
    for edge_index, ne in enumerate(plan.network_edges):
        e = ne.edge
        up_name = graph.get(e.upstream).name
        down_name = graph.get(ne.downstream_op).name
        grid: dict[tuple[int, int], Any] = {}
        for i in range(p):
            for j in range(p):
                if (e.partitioning == "forward" and i != j) or (i not in local and j not in local):
                    continue
                name = f"{up_name}[{i}/{p}] -> {down_name}[{j}/{p}]"
                channel_id = (edge_index * p + i) * p + j
                if i in local and j in local:
                    grid[i, j] = Channel(options.channel_capacity, name)
                elif i in local:
                    assert remote is not None
                    peer = remote.owner(j)
                    assert peer is not None
                    grid[i, j] = remote.output(channel_id, options.channel_capacity, name, peer)
                else:
                    assert remote is not None
                    peer = remote.owner(i)
                    assert peer is not None
                    grid[i, j] = remote.input(channel_id, options.channel_capacity, name, peer)
                if j in local:
                    channels.append(grid[i, j])
        for i in sorted(local):
            targets = [grid[i, j] for j in range(p) if (i, j) in grid]
            w = RecordWriter(
                targets, e.partitioning, e.key_fn, plan.max_parallelism, options.buffer_size
            )
            logic[e.upstream][i].output.targets(e.output).writers.append(w)
            writers.setdefault((ne.upstream_chain, i), []).append(w)
        for j in sorted(local):
            inputs.setdefault((ne.downstream_chain, j), []).extend(
                grid[i, j] for i in range(p) if (i, j) in grid
            )
    tasks: list[Task] = []
    for chain in plan.chains:
        for i in sorted(local):
            ops = [logic[o][i] for o in chain.operators]
            task = Task(
                name=ops[0].task_name,
                subtask=i,
                chain=ops,
                inputs=inputs.get((chain.index, i), []),
                writers=writers.get((chain.index, i), []),
                on_snapshot=on_snapshot,
                source_batch_size=options.source_batch_size,
            )
            tasks.append(task)
    for task in tasks:
        task.open(
            {
                op.spec.state_id: restored.get(op.spec.state_id, {}).get(task.subtask)
                for op in task.chain
            }
            if restored
            else {}
        )
    return BuiltJob(tasks=tasks, channels=channels, logic=logic)


def _ramped(op: OperatorSpec, options: RuntimeOptions) -> OperatorSpec:
    # A restored source reads through the startup ramp, when the run asks for one.
    if op.kind != "source" or options.startup_ramp_s is None:
        return op
    source = RampedSource(op.params["source"], options.startup_ramp_s, options.ramp_start_rate)
    return replace(op, params=MappingProxyType({**op.params, "source": source}))
