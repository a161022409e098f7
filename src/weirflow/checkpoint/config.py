"""Checkpoint configuration: how often, how many at once, where, and what is kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, get_args

from weirflow.checkpoint.keys import check_key
from weirflow.errors import ConfigError

CheckpointMode = Literal["exactly_once", "at_least_once", "at_most_once"]
"""Delivery guarantee the checkpoints serve (``docs/architecture.md``)."""

CHECKPOINT_MODES: tuple[str, ...] = get_args(CheckpointMode)
_ONE_MS = timedelta(milliseconds=1)


def to_ms(duration: timedelta) -> int:
    """Convert a public ``timedelta`` to the integer milliseconds used inside.

    Args:
        duration: a duration; sub-millisecond parts are truncated.

    Returns:
        Whole milliseconds as an ``int``.
    """
    return duration // _ONE_MS


@dataclass(frozen=True)
class CheckpointConfig:
    """When and where checkpoints are taken and how many are kept.

    Attributes:
        storage: a local folder or any fsspec URL (``s3://bucket/prefix``,
            ``memory://name``) under which each job gets a folder.
        interval: time between two checkpoint triggers.
        mode: ``exactly_once`` (aligned barriers), ``at_least_once``
            (barriers not aligned) or ``at_most_once``.
        timeout: a checkpoint not completed this long after its trigger fails.
        min_pause: least time between the completion of one checkpoint and
            the trigger of the next.
        max_concurrent: most checkpoints pending at once.
        retained: number of completed checkpoints kept; older ones are deleted.
        tolerable_failures: consecutive checkpoint failures (declined, timed
            out, manifest not written) a run tolerates, as Flink's
            tolerable-failed-checkpoints: one more fails the run with the
            last reason. ``0`` tolerates none; a completed checkpoint resets
            the count.
        key: the checkpoint key (at least 16 random bytes) that signs the
            job's checkpoint files; pickled state is restored only from files
            signed with it. ``None``: the ``WEIRFLOW_CHECKPOINT_KEY`` (hex) or
            ``WEIRFLOW_CHECKPOINT_KEY_FILE`` environment variable, else a key
            file generated next to a local storage folder
            (``<storage>/../checkpoint-keys/<job>.key``, mode 0600). Never
            shown in the config's repr.
        allow_duplicates_after_fallback: restore a checkpoint older than the
            newest output a two-phase-commit sink committed (the newer
            checkpoints are unusable), accepting that the output committed
            since is written again. ``False`` (default) fails such a restore
            with a :class:`~weirflow.errors.DuplicateOutputError`.
        unaligned: take unaligned checkpoints (Flink's FLIP-76): the barrier
            overtakes the records buffered in channels and output queues,
            and those in-flight records become part of the checkpoint, so a
            checkpoint completes quickly under backpressure. Needs
            ``mode="exactly_once"`` and ``max_concurrent=1``. A checkpoint
            holding in-flight records restored at another parallelism gives
            each record to the subtask owning its key group; not at
            parallelism 1, nor with a ``broadcast`` edge (rescale from an
            aligned checkpoint or a savepoint then).
        alignment_timeout: with ``unaligned=True``, start each checkpoint
            aligned and let its barrier overtake (unaligned) once this long
            passed since the checkpoint's trigger, as Flink's
            aligned-checkpoint-timeout; ``None`` (default): unaligned from the
            start. Once the timeout passed, the barrier overtakes wherever
            it waits: a sender's output queue, a channel, a receiver's
            alignment.
        allow_non_restored_state: restore a checkpoint or savepoint holding
            state of operators the job no longer has, leaving that state
            behind (Flink's ``--allowNonRestoredState``); ``False`` (default)
            refuses such a restore, naming the operators.

    Raises:
        ConfigError: on construction, when a field has the wrong type or is
            out of range; the message names the field and the fix.
    """

    storage: str = "./weirflow-data/checkpoints"
    interval: timedelta = timedelta(seconds=1)
    mode: CheckpointMode = "exactly_once"
    timeout: timedelta = timedelta(minutes=10)
    min_pause: timedelta = timedelta(0)
    max_concurrent: int = 1
    retained: int = 3
    tolerable_failures: int = 3
    key: bytes | None = field(default=None, repr=False)
    allow_duplicates_after_fallback: bool = False
    unaligned: bool = False
    alignment_timeout: timedelta | None = None
    allow_non_restored_state: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.storage, str) or not self.storage.strip():
            raise ConfigError(
                "CheckpointConfig.storage must be a non-empty folder path or fsspec URL, "
                f"got {self.storage!r}; pass e.g. './weirflow-data/checkpoints' or 's3://bucket/p'"
            )
        if self.mode not in CHECKPOINT_MODES:
            raise ConfigError(
                f"CheckpointConfig.mode must be one of {', '.join(CHECKPOINT_MODES)}, "
                f"got {self.mode!r}"
            )
        self._check_duration("interval", self.interval, positive=True)
        self._check_duration("timeout", self.timeout, positive=True)
        self._check_duration("min_pause", self.min_pause, positive=False)
        self._check_count("max_concurrent", self.max_concurrent)
        self._check_count("retained", self.retained)
        if type(self.tolerable_failures) is not int or self.tolerable_failures < 0:
            raise ConfigError(
                "CheckpointConfig.tolerable_failures must be an int >= 0, "
                f"got {self.tolerable_failures!r}"
            )
        if self.key is not None:
            check_key(self.key, "CheckpointConfig.key")
        for flag in ("allow_duplicates_after_fallback", "allow_non_restored_state"):
            if type(getattr(self, flag)) is not bool:
                raise ConfigError(
                    f"CheckpointConfig.{flag} must be True or False, got {getattr(self, flag)!r}"
                )
        self._check_unaligned()

    def _check_unaligned(self) -> None:
        if type(self.unaligned) is not bool:
            raise ConfigError(
                f"CheckpointConfig.unaligned must be True or False, got {self.unaligned!r}"
            )
        if self.alignment_timeout is not None:
            self._check_duration("alignment_timeout", self.alignment_timeout, positive=False)
            if not self.unaligned:
                raise ConfigError(
                    "CheckpointConfig.alignment_timeout only applies to unaligned checkpoints: "
                    "add unaligned=True, or drop alignment_timeout"
                )
        if not self.unaligned:
            return
        if self.mode != "exactly_once":
            raise ConfigError(
                f"CheckpointConfig(unaligned=True) needs mode='exactly_once', got {self.mode!r}: "
                "at-least-once barriers are never aligned, so there is nothing to overtake"
            )
        if self.max_concurrent != 1:
            raise ConfigError(
                "CheckpointConfig(unaligned=True) needs max_concurrent=1 (a task captures the "
                f"in-flight records of one checkpoint at a time), got {self.max_concurrent}"
            )

    @staticmethod
    def _check_duration(name: str, value: object, *, positive: bool) -> None:
        if not isinstance(value, timedelta):
            raise ConfigError(
                f"CheckpointConfig.{name} must be a datetime.timedelta, got "
                f"{type(value).__name__}; write e.g. timedelta(seconds=1)"
            )
        if positive and to_ms(value) <= 0:
            raise ConfigError(
                f"CheckpointConfig.{name} must be at least 1 millisecond, got {value!r}"
            )
        if not positive and value < timedelta(0):
            raise ConfigError(f"CheckpointConfig.{name} must not be negative, got {value!r}")

    @staticmethod
    def _check_count(name: str, value: object) -> None:
        if type(value) is not int or value < 1:
            raise ConfigError(f"CheckpointConfig.{name} must be an int >= 1, got {value!r}")

    @property
    def interval_ms(self) -> int:
        """``interval`` in whole milliseconds."""
        return to_ms(self.interval)

    @property
    def timeout_ms(self) -> int:
        """``timeout`` in whole milliseconds."""
        return to_ms(self.timeout)

    @property
    def unaligned_after_ms(self) -> int | None:
        """When barriers may overtake records (``CheckpointBarrier.unaligned_after_ms``).

        Returns:
            ``None`` for aligned checkpoints, ``0`` for unaligned ones, else
            ``alignment_timeout`` in whole milliseconds.
        """
        if not self.unaligned:
            return None
        return to_ms(self.alignment_timeout) if self.alignment_timeout is not None else 0

    @property
    def min_pause_ms(self) -> int:
        """``min_pause`` in whole milliseconds."""
        return to_ms(self.min_pause)
