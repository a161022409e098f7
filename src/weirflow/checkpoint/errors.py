"""Errors of the checkpoint layer, all derived from :class:`weirflow.errors.CheckpointError`.

None is retriable (``CheckpointError``'s default): each names a condition a
restart does not change.
"""

from __future__ import annotations

from weirflow.errors import CheckpointError, ConfigError


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


class CheckpointStorageError(CheckpointError, ConfigError):
    """The checkpoint storage cannot be used: a part of its path is a file, its
    protocol is unknown or needs a package that is not installed, or this
    process cannot write there.

    Also a :class:`~weirflow.errors.ConfigError`: the fix is another storage
    location or an install, never a retry.
    """


class NoCheckpointError(CheckpointError, ConfigError):
    """``restore="latest"`` was asked for, but the job has no usable completed checkpoint.

    Attributes:
        job: the job's name.
        root_url: the job folder that was searched.
        skipped: one ``"path (reason)"`` per unusable checkpoint found.
    """

    def __init__(self, job: str, root_url: str, skipped: list[str]) -> None:
        self.job = job
        self.root_url = root_url
        self.skipped = skipped
        super().__init__(
            f"restore='latest' but {self.what_is_missing()}. To start fresh pass restore='none' "
            "(or 'latest-or-fresh' to resume when possible); to restore a savepoint pass its path"
        )

    def what_is_missing(self) -> str:
        """Return the finding without advice, e.g. for a command line that words its own fix."""
        reason = f"; unusable: {'; '.join(self.skipped)}" if self.skipped else ""
        return f"job {self.job!r} has no usable completed checkpoint under {self.root_url}{reason}"


class CheckpointFailuresExceededError(CheckpointError):
    """More consecutive checkpoints failed than ``CheckpointConfig.tolerable_failures`` allows.

    Not retriable: restarting does not fix what makes every checkpoint fail
    (a full disk, revoked credentials), and a job that cannot checkpoint
    commits nothing. Raise ``tolerable_failures`` for storage that fails in
    bursts.

    Attributes:
        job: the job's name.
        failures: the consecutive failures counted.
        reason: why the last one failed.
    """

    def __init__(self, job: str, failures: int, reason: str) -> None:
        super().__init__(
            f"{failures} consecutive checkpoints of job {job!r} failed, more than "
            f"CheckpointConfig.tolerable_failures allows; the last: {reason}"
        )
        self.job = job
        self.failures = failures
        self.reason = reason
