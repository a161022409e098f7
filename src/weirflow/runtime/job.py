"""Running one job attempt to its end on the local scheduler."""

from __future__ import annotations

import time
from collections.abc import Callable

from weirflow.graph import LogicalGraph, compile_plan
from weirflow.records import JobResult, OperatorCounts
from weirflow.runtime.build import BuiltJob, RuntimeOptions, build_job
from weirflow.runtime.local import LocalScheduler
from weirflow.runtime.operators import SinkLogic


def wall_clock_ms() -> int:
    """Processing time: ms since the epoch from the system clock."""
    return time.time_ns() // 1_000_000


def counts(graph: LogicalGraph, built: BuiltJob) -> dict[str, OperatorCounts]:
    """Sum every operator's counters over its subtasks."""
    out: dict[str, OperatorCounts] = {}
    for op in graph.operators:
        subs = built.logic[op.id].values()
        out[op.name] = OperatorCounts(
            records_in=sum(s.records_in for s in subs),
            records_out=sum(s.records_out for s in subs),
            filtered=sum(s.filtered for s in subs),
            late=sum(s.late for s in subs),
            dead_lettered=sum(s.dead_lettered for s in subs),
        )
    return out


def run_unchecked(
    graph: LogicalGraph,
    parallelism: int,
    max_parallelism: int,
    options: RuntimeOptions | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    sleep: Callable[[float], None] = time.sleep,
    scheduler_hook: Callable[[LocalScheduler], None] | None = None,
    guarantee: str = "exactly_once",
) -> JobResult:
    """Run ``graph`` without checkpoints until every bounded source ends.

    Steps:
        1. compile the plan and build the tasks;
        2. step them on the local scheduler until all finished;
        3. finish the sinks (commit what they hold) and close every task.

    Args:
        graph: the logical graph.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        options: buffer and batch sizes.
        clock: processing time in ms.
        sleep: blocking wait in seconds.
        scheduler_hook: called with the scheduler before it runs (tests and
            metrics add per-round hooks there).
        guarantee: ``at_most_once`` makes sources commit positions as they read.

    Returns:
        The :class:`~weirflow.records.JobResult`; if a hook stopped the run
        early, the counts so far.

    Raises:
        JobFailedError: a task failed; every task is closed first.
    """
    start = clock()
    plan = compile_plan(graph, parallelism, max_parallelism)
    built = build_job(
        graph,
        plan,
        options or RuntimeOptions(),
        clock,
        sleep,
        on_snapshot=lambda task, cid, states: None,
        guarantee=guarantee,
    )
    scheduler = LocalScheduler(built.tasks, built.channels, clock, sleep)
    if scheduler_hook is not None:
        scheduler_hook(scheduler)
    try:
        if scheduler.run():
            for task in built.tasks:
                for op in task.chain:
                    if isinstance(op, SinkLogic):
                        op.finish()
    finally:
        for task in built.tasks:
            task.close()
    return JobResult(
        job=graph.name,
        parallelism=parallelism,
        operators=counts(graph, built),
        duration_ms=clock() - start,
    )
