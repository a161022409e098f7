"""Restart strategies: whether and when a failed job attempt is restarted.

The three strategies of Apache Flink: fixed delay (at most ``n`` restarts,
a fixed wait between), exponential backoff (waits grow by a factor up to a
cap, with jitter so that a fleet of jobs does not restart in lockstep; the
wait resets after a stable period), and failure rate (give up when more
than ``n`` failures fall within a sliding interval). Each is a small state
machine over failure times; the caller does the waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from weirflow.errors import ConfigError

StrategyKind = Literal["none", "fixed_delay", "exponential_backoff", "failure_rate"]


def _ms(d: timedelta, what: str) -> int:
    if d < timedelta(0):
        raise ConfigError(f"RestartStrategy {what} must not be negative, got {d}")
    return int(d / timedelta(milliseconds=1))


@dataclass(frozen=True)
class RestartStrategy:
    """A restart policy; build one with the static constructors.

    Attributes:
        kind: which strategy.
        max_restarts: fixed delay: restarts allowed in total; failure rate:
            failures allowed within ``interval``.
        delay_ms: fixed delay and failure rate: wait before a restart;
            exponential backoff: the first wait.
        max_delay_ms: exponential backoff: the cap on one wait.
        multiplier: exponential backoff: growth per consecutive failure.
        jitter: exponential backoff: each wait is scaled by a random factor
            in ``[1 - jitter, 1 + jitter]``.
        reset_after_ms: exponential backoff: an attempt that ran this long
            resets the wait to ``delay_ms``.
        interval_ms: failure rate: the sliding window for counting failures.
    """

    kind: StrategyKind = "none"
    max_restarts: int = 0
    delay_ms: int = 0
    max_delay_ms: int = 0
    multiplier: float = 2.0
    jitter: float = 0.1
    reset_after_ms: int = 3_600_000
    interval_ms: int = 0
    seed: int | None = field(default=None, compare=False)

    @staticmethod
    def none() -> RestartStrategy:
        """Never restart: the first failure fails the job."""
        return RestartStrategy("none")

    @staticmethod
    def fixed_delay(max_restarts: int, delay: timedelta = timedelta(seconds=1)) -> RestartStrategy:
        """Restart at most ``max_restarts`` times, waiting ``delay`` before each."""
        if max_restarts < 0:
            raise ConfigError(f"max_restarts must be ≥ 0, got {max_restarts}")
        return RestartStrategy("fixed_delay", max_restarts, _ms(delay, "delay"))

    @staticmethod
    def exponential_backoff(
        initial: timedelta = timedelta(seconds=1),
        max_delay: timedelta = timedelta(minutes=1),
        multiplier: float = 2.0,
        jitter: float = 0.1,
        reset_after: timedelta = timedelta(hours=1),
        max_restarts: int = 2**31 - 1,
        seed: int | None = None,
    ) -> RestartStrategy:
        """Restart with growing waits: ``initial × multiplier^k`` capped at ``max_delay``, ± jitter.

        Raises:
            ConfigError: ``multiplier`` < 1, ``jitter`` outside ``[0, 1)``, or negative durations.
        """
        if multiplier < 1:
            raise ConfigError(f"multiplier must be ≥ 1, got {multiplier}")
        if not 0 <= jitter < 1:
            raise ConfigError(f"jitter must be in [0, 1), got {jitter}")
        return RestartStrategy(
            "exponential_backoff",
            max_restarts,
            _ms(initial, "initial"),
            _ms(max_delay, "max_delay"),
            multiplier,
            jitter,
            _ms(reset_after, "reset_after"),
            seed=seed,
        )

    @staticmethod
    def failure_rate(
        max_failures: int,
        interval: timedelta = timedelta(minutes=1),
        delay: timedelta = timedelta(seconds=1),
    ) -> RestartStrategy:
        """Restart unless more than ``max_failures`` failures happened within ``interval``."""
        if max_failures < 1:
            raise ConfigError(f"max_failures must be ≥ 1, got {max_failures}")
        return RestartStrategy(
            "failure_rate",
            max_failures,
            _ms(delay, "delay"),
            interval_ms=_ms(interval, "interval"),
        )

    def tracker(self) -> RestartTracker:
        """Return a fresh tracker that applies this strategy to a run's failures."""
        return RestartTracker(self)


class RestartTracker:
    """Applies a :class:`RestartStrategy` to the failures of one job run.

    Args:
        strategy: the strategy.
    """

    def __init__(self, strategy: RestartStrategy) -> None:
        self.strategy = strategy
        self.restarts = 0
        self._failures: list[int] = []
        self._consecutive = 0
        self._rng = random.Random(strategy.seed)

    def on_failure(self, now_ms: int, attempt_started_ms: int) -> int | None:
        """Record a failure at ``now_ms``; return the wait in ms before restarting, or ``None``.

        Args:
            now_ms: when the attempt failed.
            attempt_started_ms: when the failed attempt started (exponential
                backoff resets after a long enough attempt).

        Returns:
            Milliseconds to wait, or ``None`` when the strategy gives up.
        """
        s = self.strategy
        self._failures.append(now_ms)
        if s.kind == "none":
            return None
        if s.kind == "fixed_delay":
            if self.restarts >= s.max_restarts:
                return None
            self.restarts += 1
            return s.delay_ms
        if s.kind == "failure_rate":
            recent = [t for t in self._failures if now_ms - t < s.interval_ms]
            if len(recent) > s.max_restarts:
                return None
            self.restarts += 1
            return s.delay_ms
        if now_ms - attempt_started_ms >= s.reset_after_ms:
            self._consecutive = 0
        if self.restarts >= s.max_restarts:
            return None
        wait = min(s.delay_ms * s.multiplier**self._consecutive, s.max_delay_ms)
        self._consecutive += 1
        self.restarts += 1
        return int(wait * self._rng.uniform(1 - s.jitter, 1 + s.jitter))
