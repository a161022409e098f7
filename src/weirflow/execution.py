"""Running a logical graph: the bridge from the builder (``api``) to the ``runtime``.

It is a top-level module because the layer table lets ``api`` describe a job
but not import the runtime that executes it.
"""

from __future__ import annotations

from typing import Any

from weirflow.errors import ConfigError
from weirflow.graph import LogicalGraph
from weirflow.records import JobResult
from weirflow.runtime import RuntimeOptions, run_unchecked


def execute(
    graph: LogicalGraph,
    parallelism: int,
    max_parallelism: int,
    *,
    runtime: RuntimeOptions | None = None,
    **unknown: Any,
) -> JobResult:
    """Run ``graph`` in this process on the local scheduler.

    Args:
        graph: the logical graph.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        runtime: buffer and batch sizes.

    Returns:
        The job's :class:`~weirflow.records.JobResult`.

    Raises:
        ConfigError: an unknown option.
        JobFailedError: a task failed.
    """
    if unknown:
        raise ConfigError(f"unknown run() option(s): {', '.join(sorted(unknown))}")
    return run_unchecked(graph, parallelism, max_parallelism, runtime)
