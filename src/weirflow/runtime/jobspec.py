"""What a job coordinator runs: the job, its parallelism, checkpoints, restore and restarts.

:class:`JobSpec` is what the CLI, the local cluster and Ray hand to
:class:`~weirflow.runtime.coordinator.JobCoordinator`; it is a plain frozen
value, so building one needs neither the coordinator nor its sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weirflow.checkpoint import CheckpointConfig
from weirflow.graph import LogicalGraph
from weirflow.runtime.build import RuntimeOptions
from weirflow.runtime.restart import RestartStrategy


@dataclass(frozen=True)
class JobSpec:
    """What to run.

    Attributes:
        job: ``JOB.py[:NAME]``, importable on every worker.
        graph: the job's logical graph (loaded here too, for names and checks).
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        checkpoint: checkpoint configuration, or ``None`` (no checkpoints).
        guarantee: the delivery guarantee (``at_most_once`` runs without checkpoints).
        restore: ``None``, ``"latest"``, ``"latest-or-fresh"`` or a checkpoint path.
        restart: the restart strategy.
        options: runtime sizes.
    """

    job: str
    graph: LogicalGraph
    parallelism: int
    max_parallelism: int = 128
    checkpoint: CheckpointConfig | None = None
    guarantee: str = "exactly_once"
    restore: str | None = None
    restart: RestartStrategy = field(default_factory=RestartStrategy.none)
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
