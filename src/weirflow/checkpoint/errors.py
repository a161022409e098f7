"""Errors of the checkpoint layer, all derived from :class:`weirflow.errors.CheckpointError`."""

from __future__ import annotations

from weirflow.errors import CheckpointError


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file failed verification: bad magic, unknown format version,
    truncation, or a checksum mismatch.

    Attributes:
        path: URL or path of the file that failed verification.
        reason: what was wrong with it, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"checkpoint file {path} is corrupt: {reason}")
        self.path = path
        self.reason = reason


class CheckpointConflictError(CheckpointError):
    """Another writer already completed the same checkpoint id (or savepoint folder).

    Two coordinators writing one job's checkpoints means one of them is a
    zombie from an earlier attempt; retrying cannot help.
    """


class CheckpointTransitionError(CheckpointError):
    """A checkpoint or the coordinator was asked to make a state transition
    its state machine does not allow."""
