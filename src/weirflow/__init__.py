"""weirflow: fault-tolerant stream processing for Python.

Public entry points: :class:`Dataflow` to build a job, :class:`WatermarkStrategy`
for event time, and the error types in :mod:`weirflow.errors`. Window assigners
are in :mod:`weirflow.windows`, sources and sinks in :mod:`weirflow.connectors`.
"""

from weirflow.errors import (
    CheckpointError,
    ConfigError,
    EventLogError,
    JobFailedError,
    OperatorError,
    SerdeError,
    StateError,
    WeirflowError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EventLogError",
    "JobFailedError",
    "OperatorError",
    "SerdeError",
    "StateError",
    "WeirflowError",
    "__version__",
]
