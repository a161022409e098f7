"""The error hierarchy of weirflow.

Every error weirflow raises derives from :class:`WeirflowError`. Each class
carries ``retriable`` as a class attribute, so that callers (a retry policy,
a restart strategy) decide by type whether trying again can help, never by
parsing messages.
"""

from __future__ import annotations


class WeirflowError(Exception):
    """Root of all weirflow errors.

    Attributes:
        retriable: ``True`` when the same call may succeed if tried again
            later (a transient condition), ``False`` when it never will.
    """

    retriable: bool = False


class ConfigError(WeirflowError):
    """A configuration value is invalid (wrong type, out of range, inconsistent)."""


class SerdeError(WeirflowError):
    """A value cannot be serialized, or bytes cannot be deserialized."""


class UnsupportedFormatVersionError(SerdeError):
    """Bytes or a file carry a format version this build does not know."""


class TimestampError(WeirflowError):
    """An event timestamp is not an ``int`` of milliseconds since the epoch.

    Raised per record by the source's ``timestamp=`` check; the record then
    follows the source's ``on_error`` policy. Never retriable: the same
    record gives the same timestamp again.
    """


class EventLogError(WeirflowError):
    """Base of event-log errors."""


class StateError(WeirflowError):
    """Keyed state was used wrongly (no current key, unknown descriptor) or is corrupt."""


class CheckpointError(WeirflowError):
    """A checkpoint could not be written, read, or verified."""


class JobFailedError(WeirflowError):
    """A task of the job failed; the message names the task as ``operator[subtask/parallelism]``."""


class OperatorError(JobFailedError):
    """A user function raised while processing a record.

    Attributes:
        operator: name of the operator whose function raised.
        subtask: index of the subtask (0-based).
        parallelism: number of subtasks of the operator.
        record: the input record, as given to the function (the raw bytes
            for a record that a source could not decode).
        position: where a source read the record (a
            :class:`~weirflow.records.LogPosition` for event-log and Kafka
            sources), or ``None`` when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        operator: str,
        subtask: int,
        parallelism: int,
        record: object,
        position: object = None,
    ) -> None:
        super().__init__(message)
        self.operator = operator
        self.subtask = subtask
        self.parallelism = parallelism
        self.record = record
        self.position = position
