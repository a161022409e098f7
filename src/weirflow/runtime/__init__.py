"""Tasks and their step loop, channels with credit-based flow control,
partitioners, control events, and the local scheduler."""

from weirflow.runtime.build import BuiltJob, RuntimeOptions, build_job
from weirflow.runtime.channel import Channel
from weirflow.runtime.checkpointed import CheckpointedRun, RunListener
from weirflow.runtime.events import (
    Batch,
    CheckpointBarrier,
    EndOfPartition,
    Watermark,
)
from weirflow.runtime.inflight import in_flight_items
from weirflow.runtime.inflight_restore import rescale_refusal
from weirflow.runtime.job import run_unchecked, wall_clock_ms
from weirflow.runtime.local import LocalScheduler
from weirflow.runtime.ray_cluster import RayCluster
from weirflow.runtime.restart import RestartStrategy, RestartTracker
from weirflow.runtime.run import run_job
from weirflow.runtime.snapshot_files import FILE_SEPARATOR
from weirflow.runtime.snapshots import state_file_uses_pickle
from weirflow.runtime.task import Task, TaskState

__all__ = [
    "FILE_SEPARATOR",
    "Batch",
    "BuiltJob",
    "Channel",
    "CheckpointBarrier",
    "CheckpointedRun",
    "EndOfPartition",
    "LocalScheduler",
    "RayCluster",
    "RestartStrategy",
    "RestartTracker",
    "RunListener",
    "RuntimeOptions",
    "Task",
    "TaskState",
    "Watermark",
    "build_job",
    "in_flight_items",
    "rescale_refusal",
    "run_job",
    "run_unchecked",
    "state_file_uses_pickle",
    "wall_clock_ms",
]
