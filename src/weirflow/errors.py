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
    """A task of the job failed; the message names the task as ``operator[subtask/parallelism]``.

    Retriable: a task fails for a lost connection, an I/O error or a dead
    process far more often than for a reason that recurs; subclasses for
    deterministic failures say otherwise.
    """

    retriable = True


class OperatorError(JobFailedError):
    """A user function raised while processing a record.

    Not retriable as a class: the same function raises again on the same
    record after a restore. :func:`is_retriable` makes an exception of a
    transient cause (see there).

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

    retriable = False

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


def _transient(cause: BaseException | None) -> bool:
    # The same test RetryPolicy applies to a user function's errors by default: I/O,
    # connections and timeouts (OSError), and anything that says ``retriable = True``.
    return isinstance(cause, OSError) or getattr(cause, "retriable", False) is True


def is_retriable(error: BaseException) -> bool:
    """Whether restarting the job may get past ``error``, or it will recur on every attempt.

    The one classification the restart loops use (in-process and the ``weirflow
    run`` supervisor). The first row that matches decides:

    ======================================  ==========  =====================================
    error                                   retriable   why
    ======================================  ==========  =====================================
    :class:`OperatorError` (a user          when its    a ``ValueError`` on a record recurs
    function raised under ``on_error=       cause is    after every restore; a timeout or a
    "fail"``)                               transient   refused connection may not
    any other :class:`WeirflowError`        its         each class states it: a missing
                                            ``retri-    topic, a bad configuration or an
                                            able``      unwritable storage never heal by
                                                        themselves, a busy lock does
    ``OSError`` (I/O, connections,          yes         transient by nature
    timeouts)
    any other exception                     yes         unknown: the restart strategy bounds
                                                        how often it is tried
    ======================================  ==========  =====================================

    A cause is transient when it is an ``OSError`` or carries ``retriable = True``.

    Args:
        error: the exception that failed an attempt.

    Returns:
        ``True`` when a restart may help, ``False`` when the run should fail at once.
    """
    if isinstance(error, OperatorError):
        return _transient(error.__cause__)
    if isinstance(error, WeirflowError):
        return error.retriable
    return True
