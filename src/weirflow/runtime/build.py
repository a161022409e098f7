"""Building the runnable job from a physical plan: logic objects, channels, writers, tasks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from weirflow.graph import LogicalGraph, PhysicalPlan
from weirflow.runtime.channel import Channel
from weirflow.runtime.operators import OperatorContext, OperatorLogic, build_logic
from weirflow.runtime.partitioners import RecordWriter
from weirflow.runtime.task import SnapshotCallback, Task
from weirflow.state import key_group_range_for_subtask


@dataclass(frozen=True)
class RuntimeOptions:
    """Sizes of the runtime's bounded pieces.

    Attributes:
        source_batch_size: records a source subtask reads per step.
        buffer_size: records per network buffer.
        channel_capacity: buffers a channel holds (the credit per channel).
    """

    source_batch_size: int = 1024
    buffer_size: int = 1024
    channel_capacity: int = 4


@dataclass
class BuiltJob:
    """The runnable pieces of one job attempt.

    Attributes:
        tasks: all tasks, sources first (plan order), subtasks in order.
        channels: all channels.
        logic: ``operator id -> [logic per subtask]``.
    """

    tasks: list[Task]
    channels: list[Channel]
    logic: dict[int, list[OperatorLogic]]


def build_job(
    graph: LogicalGraph,
    plan: PhysicalPlan,
    options: RuntimeOptions,
    clock: Callable[[], int],
    sleep: Callable[[float], None],
    on_snapshot: SnapshotCallback,
    restored: Mapping[str, Mapping[int, Any]] | None = None,
    guarantee: str = "exactly_once",
) -> BuiltJob:
    """Instantiate every subtask of ``plan``.

    Steps:
        1. build one logic object per operator per subtask;
        2. wire chained edges as direct calls;
        3. create channels and record writers for network edges;
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

    Returns:
        The :class:`BuiltJob`.
    """
    p = plan.parallelism
    logic: dict[int, list[OperatorLogic]] = {}
    for op in graph.operators:
        logic[op.id] = [
            build_logic(
                op,
                OperatorContext(
                    job=plan.job,
                    subtask=i,
                    parallelism=p,
                    max_parallelism=plan.max_parallelism,
                    key_group_range=key_group_range_for_subtask(plan.max_parallelism, p, i),
                    clock=clock,
                    sleep=sleep,
                    guarantee=guarantee,
                ),
            )
            for i in range(p)
        ]
    for up, down, edge in plan.chained_edges:
        for i in range(p):
            logic[up][i].output.targets(edge.output).chained.append(logic[down][i])
    channels: list[Channel] = []
    inputs: dict[tuple[int, int], list[Channel]] = {}
    writers: dict[tuple[int, int], list[RecordWriter]] = {}
    for ne in plan.network_edges:
        e = ne.edge
        up_name = graph.get(e.upstream).name
        down_name = graph.get(ne.downstream_op).name
        grid = [
            [
                Channel(options.channel_capacity, f"{up_name}[{i}/{p}] -> {down_name}[{j}/{p}]")
                if e.partitioning != "forward" or i == j
                else None
                for j in range(p)
            ]
            for i in range(p)
        ]
        for i in range(p):
            targets = [c for c in grid[i] if c is not None]
            channels.extend(targets)
            w = RecordWriter(
                targets, e.partitioning, e.key_fn, plan.max_parallelism, options.buffer_size
            )
            logic[e.upstream][i].output.targets(e.output).writers.append(w)
            writers.setdefault((ne.upstream_chain, i), []).append(w)
        for j in range(p):
            inputs.setdefault((ne.downstream_chain, j), []).extend(
                grid[i][j] for i in range(p) if grid[i][j] is not None
            )
    tasks: list[Task] = []
    for chain in plan.chains:
        for i in range(p):
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
            {op.name: restored.get(op.name, {}).get(task.subtask) for op in task.chain}
            if restored
            else {}
        )
    return BuiltJob(tasks=tasks, channels=channels, logic=logic)
