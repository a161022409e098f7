"""``Dataflow``: the entry point for building and running a job."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weirflow.api.stream import Stream
from weirflow.errors import ConfigError
from weirflow.graph import ErrorPolicy, LogicalGraph, check_error_policy
from weirflow.state import DEFAULT_MAX_PARALLELISM
from weirflow.time import WatermarkStrategy

if TYPE_CHECKING:
    from weirflow.connectors import Source
    from weirflow.records import JobResult


class Dataflow:
    """A named dataflow (logical graph) under construction.

    Args:
        name: the job name: letters, digits, ``-``, ``_``, ``.``; it names
            checkpoint folders, so keep it stable across versions of a job.

    Raises:
        ConfigError: an invalid name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.graph = LogicalGraph(name)

    def source(
        self,
        source: Source,
        *,
        timestamp: Callable[[Any], int] | None = None,
        watermarks: WatermarkStrategy | None = None,
        name: str | None = None,
        on_error: ErrorPolicy = "fail",
    ) -> Stream:
        """Add a source.

        Args:
            source: a connector from :mod:`weirflow.connectors`.
            timestamp: event-time extractor, ``record -> int`` ms since the
                epoch (negative before 1970); a float holding a whole number
                is taken as that int, and ``None``, ``str``, ``bool`` or a
                fractional float is a bad record (a
                :class:`~weirflow.TimestampError` under ``on_error``). Without
                it, connectors that know a record time (the event log,
                Kafka) provide theirs.
            watermarks: how watermarks follow event time; needed for
                event-time windows and timers.
            name: operator name (default ``source_<id>``).
            on_error: ``"fail"``, ``"dead_letter"`` or a
                :class:`~weirflow.RetryPolicy`, for records whose
                ``timestamp`` extractor raises or returns no valid timestamp,
                and for records the connector's ``decode=`` cannot decode
                (dead letters then carry the raw bytes and a
                :class:`~weirflow.LogPosition`; decoding is never retried).

        Returns:
            The source's stream.

        Raises:
            ConfigError: ``source`` is not a source connector, or ``on_error``
                is not a policy.
        """
        if not callable(getattr(source, "create_reader", None)):
            raise ConfigError(
                f"{type(source).__name__} is not a source: it needs list_splits() and "
                "create_reader(); use a connector from weirflow.connectors"
            )
        if watermarks is not None and not isinstance(watermarks, WatermarkStrategy):
            raise ConfigError("watermarks= takes a WatermarkStrategy")
        spec = self.graph.add(
            "source",
            name=name,
            params={"source": source, "timestamp": timestamp, "watermarks": watermarks},
            on_error=check_error_policy(on_error),
        )
        return Stream(self, spec)

    def run(
        self,
        parallelism: int = 1,
        *,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
        workers: int = 1,
        **options: Any,
    ) -> JobResult:
        """Run the dataflow until every bounded source ends.

        With ``workers > 1`` the subtasks run in that many worker processes of
        this machine, and with ``cluster=RayCluster(...)`` in worker actors of
        a Ray cluster; the workers import the dataflow from the file that defines it:
        it must be a module-level variable of a file that runs no job on import
        (guard the ``run`` call with ``if __name__ == "__main__":``, as for
        ``multiprocessing``), and results collected in this process
        (``CollectSink``) stay in the workers: write to a sink that outlives them.

        Args:
            parallelism: subtasks per operator.
            max_parallelism: number of key groups (fixed for the life of a
                job's state: restoring needs the same value).
            workers: worker processes (1: this process).
            options: runtime options (``checkpoint=``, ``restore=``,
                ``restart=``, ``cluster=``, buffer sizes); see
                :func:`weirflow.runtime.run_job`.

        Returns:
            A :class:`~weirflow.records.JobResult` with per-operator counts.

        Raises:
            JobFailedError: a task failed and the restart strategy gave up.
            ConfigError: the dataflow or an option is invalid.
        """
        from weirflow.api.job_file import load_graph
        from weirflow.runtime import run_job

        elsewhere = workers != 1 or options.get("cluster") is not None
        job = self._module_variable() if elsewhere else None
        if elsewhere and job is None:
            raise ConfigError(
                f"running on workers needs dataflow {self.name!r} as a module-level variable "
                "of a Python file, so that the worker processes can import it"
            )
        if options.get("cluster") is not None:
            options["load_graph"] = load_graph
        return run_job(
            self.graph, parallelism, max_parallelism, workers=workers, job=job, **options
        )

    def _module_variable(self) -> str | None:
        """``FILE.py:NAME`` of the module-level variable holding this dataflow, if any."""
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if not isinstance(path, str) or not path.endswith(".py"):
                continue
            for name, value in list(vars(module).items()):
                if value is self:
                    return f"{Path(path).resolve()}:{name}"
        return None
