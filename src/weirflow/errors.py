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


class DuplicateOutputError(ConfigError):
    """Restoring the chosen checkpoint would commit sink output a second time.

    A two-phase-commit sink already committed output for checkpoints newer
    than the restored one (the newer ones are unusable, or an older
    checkpoint was named). Restarting cannot help; the user decides.
    """


class SerdeError(WeirflowError):
    """A value cannot be serialized, or bytes cannot be deserialized."""


class UnsupportedFormatVersionError(SerdeError):
    """Bytes or a file carry a format version this build does not know."""


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
        record: the input record, as given to the function.
    """

    def __init__(
        self, message: str, *, operator: str, subtask: int, parallelism: int, record: object
    ) -> None:
        super().__init__(message)
        self.operator = operator
        self.subtask = subtask
        self.parallelism = parallelism
        self.record = record
