"""The retry policy, one home for retrying a user function and a connector's calls.

A top-level module (imports no layer), so that ``graph`` (operator error
policies) and ``connectors`` (:class:`~weirflow.connectors.Resilience`) share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from weirflow.errors import ConfigError


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
