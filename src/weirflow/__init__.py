"""weirflow: fault-tolerant stream processing for Python.

Public entry points: :class:`Dataflow` to build a job, :class:`WatermarkStrategy`
for event time, and the error types in :mod:`weirflow.errors`. Window assigners
are in :mod:`weirflow.windows`, sources and sinks in :mod:`weirflow.connectors`.
"""

from weirflow.api import AggregateFunction, Dataflow, KeyedProcessFunction
from weirflow.checkpoint import CheckpointConfig
from weirflow.errors import (
    CheckpointError,
    ConfigError,
    EventLogError,
    JobFailedError,
    OperatorError,
    SerdeError,
    StateError,
    TimestampError,
    WeirflowError,
)
from weirflow.graph import RetryPolicy
from weirflow.records import (
    DeadLetter,
    JobResult,
    LateRecord,
    LogPosition,
    OperatorCounts,
    WindowResult,
)
from weirflow.runtime import RayCluster, RestartStrategy
from weirflow.serde import StateMigration, StateSchema
from weirflow.time import WatermarkStrategy

__version__ = "0.1.0"

__all__ = [
    "AggregateFunction",
    "CheckpointConfig",
    "CheckpointError",
    "ConfigError",
    "Dataflow",
    "DeadLetter",
    "EventLogError",
    "JobFailedError",
    "JobResult",
    "KeyedProcessFunction",
    "LateRecord",
    "LogPosition",
    "OperatorCounts",
    "OperatorError",
    "RayCluster",
    "RestartStrategy",
    "RetryPolicy",
    "SerdeError",
    "StateError",
    "StateMigration",
    "StateSchema",
    "TimestampError",
    "WatermarkStrategy",
    "WeirflowError",
    "WindowResult",
    "__version__",
]
