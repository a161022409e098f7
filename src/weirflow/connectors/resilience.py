"""Retries and a circuit breaker in front of a connector's calls to an external system.

A connector runs each call to its external system (a database transaction,
a broker commit) through :meth:`Guard.call`:

1. the call goes through the circuit breaker (``pybreaker``, after Nygard,
   *Release It!*, ch. 5): after ``failure_threshold`` consecutive retriable
   failures the breaker **opens**, and for ``reset_timeout`` calls fail at
   once without touching the system; then one trial call is let through
   (half-open), whose success closes the breaker again;
2. a retriable failure (the connector classifies its errors) is retried by
   ``tenacity`` with exponential backoff and jitter, up to the
   :class:`~weirflow.RetryPolicy`'s ``max_attempts``; while the breaker is
   open the wait is the rest of its ``reset_timeout``;
3. an error that is not retriable, or the last retriable one, is raised: the
   task fails and the restart strategy takes over.

The waits block the sink's task. That is the backpressure the design asks
for: while the breaker is open the sink takes no new input, its input
channels fill, and the sources stop reading; nothing is dropped, and a
checkpoint whose commit waits does not complete with lost output.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import pybreaker
import tenacity

from weirflow.errors import ConfigError, WeirflowError
from weirflow.retry import RetryPolicy

log = logging.getLogger("weirflow.connectors.resilience")

T = TypeVar("T")


class BreakerState(enum.Enum):
    """A circuit breaker's state (closed: calls pass; open: calls fail at once)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerOpenError(WeirflowError):
    """A call was refused because the connector's circuit breaker is open."""

    retriable = True


@dataclass(frozen=True)
class CircuitBreaker:
    """When a connector's circuit breaker opens and when it tries again.

    Args:
        failure_threshold: consecutive retriable failures that open it (≥ 1).
        reset_timeout: how long it stays open before one trial call (> 0).

    Raises:
        ConfigError: an argument is out of range.
    """

    failure_threshold: int = 5
    reset_timeout: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigError(
                f"CircuitBreaker.failure_threshold must be ≥ 1, got {self.failure_threshold}"
            )
        if self.reset_timeout <= timedelta(0):
            raise ConfigError(f"CircuitBreaker.reset_timeout must be > 0, got {self.reset_timeout}")


def _default_retry() -> RetryPolicy:
    # About two minutes of retrying: an outage of a database restart is ridden out in place.
    return RetryPolicy(
        max_attempts=40,
        initial_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(seconds=5),
    )


@dataclass(frozen=True)
class Resilience:
    """A connector's retry policy and circuit breaker (see the module docstring).

    Args:
        retry: how often and how long to retry a retriable failure.
        breaker: when the breaker opens; ``None`` for no breaker.
        call_timeout: longest single call to the external system; a call
            that overruns fails as a lost connection (retried), so a system
            that stops answering cannot block the sink forever (> 0).
        startup_ramp: after a restore, how long the connector takes to reach
            full speed (:class:`StartupRamp`), so that a recovering system is
            not hit with the whole backlog at once; ``None``: full speed at once.
        ramp_start_rate: records/s the ramp starts from (≥ 1).

    Raises:
        ConfigError: an argument is out of range.
    """

    retry: RetryPolicy = field(default_factory=_default_retry)
    breaker: CircuitBreaker | None = field(default_factory=CircuitBreaker)
    call_timeout: timedelta = timedelta(minutes=2)
    startup_ramp: timedelta | None = None
    ramp_start_rate: int = 1000

    def __post_init__(self) -> None:
        if self.call_timeout <= timedelta(0):
            raise ConfigError(f"Resilience.call_timeout must be > 0, got {self.call_timeout}")
        if self.startup_ramp is not None and self.startup_ramp <= timedelta(0):
            raise ConfigError(f"Resilience.startup_ramp must be > 0, got {self.startup_ramp}")
        if self.ramp_start_rate < 1:
            raise ConfigError(f"Resilience.ramp_start_rate must be ≥ 1, got {self.ramp_start_rate}")

    def ramp(self) -> StartupRamp | None:
        """A :class:`StartupRamp` for a connector instance restored after a failure, or
        ``None`` without ``startup_ramp``."""
        if self.startup_ramp is None:
            return None
        return StartupRamp(self.startup_ramp.total_seconds(), self.ramp_start_rate)

    def guard(self, name: str, retriable: Callable[[BaseException], bool]) -> Guard:
        """Return a :class:`Guard` for one connector instance.

        Args:
            name: the connector's name for logs and metrics (``sink[0/2]``).
            retriable: the connector's verdict on whether an error is worth retrying.
        """
        return Guard(self, name, retriable)


class Guard:
    """One connector instance's retry loop and breaker (see :class:`Resilience`).

    Attributes:
        name: the connector's name.
        retries: error class name → retries it caused.
    """

    def __init__(
        self, config: Resilience, name: str, retriable: Callable[[BaseException], bool]
    ) -> None:
        self.config = config
        self.name = name
        self.retries: Counter[str] = Counter()
        self._retriable = retriable
        transient = self._transient
        self._lock = threading.Lock()
        self._breaker: pybreaker.CircuitBreaker | None = None
        if config.breaker is not None:
            self._breaker = pybreaker.CircuitBreaker(
                fail_max=config.breaker.failure_threshold,
                reset_timeout=config.breaker.reset_timeout.total_seconds(),
                exclude=[lambda e: not transient(e)],
                name=name,
            )

    def retries_by_class(self) -> dict[str, int]:
        """A copy of :attr:`retries`, safe to take from another thread."""
        with self._lock:
            return dict(self.retries)

    @property
    def state(self) -> BreakerState:
        """The breaker's state (``CLOSED`` without a breaker)."""
        if self._breaker is None:
            return BreakerState.CLOSED
        return BreakerState(self._breaker.current_state)

    def _transient(self, error: BaseException) -> bool:
        # The connector's verdict, or the policy's (OSError, ``retriable = True``).
        return self._retriable(error) or self.config.retry.is_retriable(error)

    def _worth_retrying(self, error: BaseException) -> bool:
        return isinstance(error, pybreaker.CircuitBreakerError) or self._transient(error)

    def _wait_s(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, pybreaker.CircuitBreakerError) and self.config.breaker is not None:
            return self.config.breaker.reset_timeout.total_seconds()
        policy = self.config.retry
        wait = tenacity.wait_exponential_jitter(
            multiplier=policy.initial_backoff.total_seconds(),
            max=policy.max_backoff.total_seconds(),
            exp_base=policy.multiplier,
            jitter=policy.initial_backoff.total_seconds(),
        )
        return wait(state)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        kind = type(error).__name__
        with self._lock:
            self.retries[kind] += 1
        log.warning(
            "%s: attempt %d failed (%s: %s); breaker %s, retrying",
            self.name,
            state.attempt_number,
            kind,
            str(error).splitlines()[0] if str(error) else "",
            self.state.value,
        )

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` behind the breaker, retrying retriable failures.

        Returns:
            What ``fn`` returned.

        Raises:
            BreakerOpenError: the breaker was still open after the last attempt.
            Exception: what ``fn`` raised, when it is not retriable or the
                attempts ran out.
        """
        breaker = self._breaker
        try:
            for attempt in tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self.config.retry.max_attempts),
                wait=self._wait_s,
                retry=tenacity.retry_if_exception(self._worth_retrying),
                before_sleep=self._before_sleep,
                reraise=True,
            ):
                with attempt:
                    return fn() if breaker is None else breaker.call(fn)
        except pybreaker.CircuitBreakerError as e:
            raise BreakerOpenError(
                f"{self.name}: circuit breaker still open after "
                f"{self.config.retry.max_attempts} attempts; the external system is down"
            ) from e
        raise AssertionError("unreachable: tenacity returns or raises")


class StartupRamp:
    """Limits a restored connector's write rate, doubling it in ten steps to full speed.

    The allowed rate starts at ``start_rate`` records/s and doubles every
    tenth of ``duration_s``; after ``duration_s`` there is no limit. Records
    over the allowance wait (a token bucket), which blocks the sink's task, so
    backpressure, not dropping, slows the sources down.

    Args:
        duration_s: length of the ramp in seconds.
        start_rate: records/s at the start.
        clock: monotonic seconds (injected for tests).
        sleep: blocking wait in seconds (injected for tests).
    """

    def __init__(
        self,
        duration_s: float,
        start_rate: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.duration_s = duration_s
        self.start_rate = start_rate
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._last = self._start
        self._tokens = 0.0

    def rate(self, elapsed_s: float) -> float | None:
        """Allowed records/s ``elapsed_s`` into the ramp, or ``None`` once it is over."""
        if elapsed_s >= self.duration_s:
            return None
        return self.start_rate * 2.0 ** (10 * elapsed_s / self.duration_s)

    def allowance(self, elapsed_s: float) -> float:
        """Records allowed in the ramp's first ``elapsed_s`` seconds: the integral of
        :meth:`rate` (the bucket accrues exactly this, so a reader never gets ahead of it)."""
        x = min(elapsed_s, self.duration_s)
        k = 10 * math.log(2) / self.duration_s
        return self.start_rate * math.expm1(k * x) / k

    def _refill(self, now: float, cap: float) -> None:
        gained = self.allowance(now - self._start) - self.allowance(self._last - self._start)
        self._tokens = min(self._tokens + gained, cap)
        self._last = now

    def acquire(self, most: int) -> int:
        """Wait until at least one record is allowed, then take up to ``most`` (≥ 1)
        allowances at once; ``most`` at once when the ramp is over.

        Returns:
            How many records the caller may read now (1 … ``most``).
        """
        while True:
            now = self._clock()
            rate = self.rate(now - self._start)
            if rate is None:
                return most
            self._refill(now, max(rate, 1.0))
            if self._tokens >= 1:
                take = min(most, int(self._tokens))
                self._tokens -= take
                return take
            self._sleep(min((1 - self._tokens) / rate, 0.5))

    def admit(self, records: int) -> None:
        """Wait until ``records`` more records are allowed (at once when the ramp is over)."""
        while True:
            now = self._clock()
            rate = self.rate(now - self._start)
            if rate is None:
                return
            self._refill(now, max(rate, records))
            if self._tokens >= records:
                self._tokens -= records
                return
            self._sleep(min((records - self._tokens) / rate, 0.5))
