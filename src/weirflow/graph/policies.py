"""Per-operator error policies: fail, dead letter, or retry then dead letter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from weirflow.errors import ConfigError

OnError = Literal["fail", "dead_letter"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failing user function with exponential backoff, then dead-letter the record.

    Args:
        max_attempts: total calls per record, the first included (≥ 1).
        initial_backoff: wait before the second call.
        max_backoff: cap on any single wait.
        multiplier: growth of the wait per attempt (≥ 1).
        retry_on: exception types worth retrying; anything else is
            dead-lettered at once. The default retries errors whose class has
            ``retriable = True`` (weirflow's convention) and ``OSError``.

    Raises:
        ConfigError: an argument is out of range.
    """

    max_attempts: int = 3
    initial_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=10)
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = field(default=(OSError,))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be ≥ 1, got {self.max_attempts}")
        if self.multiplier < 1:
            raise ConfigError(f"RetryPolicy.multiplier must be ≥ 1, got {self.multiplier}")
        if self.initial_backoff < timedelta(0) or self.max_backoff < self.initial_backoff:
            raise ConfigError(
                "RetryPolicy needs 0 ≤ initial_backoff ≤ max_backoff, got "
                f"{self.initial_backoff} and {self.max_backoff}"
            )

    def is_retriable(self, error: BaseException) -> bool:
        """Return whether ``error`` deserves another attempt under this policy."""
        return isinstance(error, self.retry_on) or bool(getattr(error, "retriable", False))


ErrorPolicy = OnError | RetryPolicy


def check_error_policy(policy: object) -> ErrorPolicy:
    """Validate an ``on_error`` argument.

    Args:
        policy: ``"fail"``, ``"dead_letter"`` or a :class:`RetryPolicy`.

    Returns:
        The policy unchanged.

    Raises:
        ConfigError: anything else.
    """
    if policy in ("fail", "dead_letter") or isinstance(policy, RetryPolicy):
        return policy  # type: ignore[return-value]
    raise ConfigError(f"on_error must be 'fail', 'dead_letter' or a RetryPolicy, got {policy!r}")
