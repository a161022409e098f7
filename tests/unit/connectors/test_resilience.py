"""Retries and the circuit breaker in front of a connector's calls."""

from __future__ import annotations

from datetime import timedelta

import pytest

from weirflow import RetryPolicy
from weirflow.connectors import BreakerOpenError, BreakerState, CircuitBreaker, Resilience
from weirflow.connectors.resilience import StartupRamp
from weirflow.errors import ConfigError

FAST = RetryPolicy(
    max_attempts=8, initial_backoff=timedelta(milliseconds=1), max_backoff=timedelta(milliseconds=2)
)


class Down(ConnectionError):
    """The external system does not answer."""


class Refused(ValueError):
    """The system refused the call for good."""


def flaky(failures: int, states: list[BreakerState], guard_ref: list) -> object:
    calls = {"n": 0}

    def call() -> str:
        states.append(guard_ref[0].state)
        calls["n"] += 1
        if calls["n"] <= failures:
            raise Down("no route")
        return "ok"

    return call


def test_breaker_opens_then_closes_and_retries_are_counted_by_class() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=timedelta(milliseconds=5))
    guard = Resilience(retry=FAST, breaker=breaker).guard("sink[0/1]", lambda e: False)
    states: list[BreakerState] = []
    assert guard.call(flaky(3, states, [guard])) == "ok"  # type: ignore[arg-type]
    assert BreakerState.HALF_OPEN in states  # trial calls only after the reset timeout
    assert guard.state is BreakerState.CLOSED
    assert guard.retries["Down"] >= 1 and guard.retries["CircuitBreakerError"] >= 1


def test_a_refused_call_is_not_retried_and_does_not_open_the_breaker() -> None:
    guard = Resilience(retry=FAST).guard("sink[0/1]", lambda e: isinstance(e, Down))
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise Refused("bad row")

    with pytest.raises(Refused):
        guard.call(refuse)
    assert calls == [1] and guard.state is BreakerState.CLOSED


def test_an_outage_longer_than_the_retries_ends_in_a_clear_error() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=timedelta(milliseconds=1))
    guard = Resilience(retry=FAST, breaker=breaker).guard("pg[1/2]", lambda e: True)

    def down() -> None:
        raise Down("refused")

    with pytest.raises((BreakerOpenError, Down)) as info:
        guard.call(down)
    assert "pg[1/2]" in str(info.value) or isinstance(info.value, Down)


def test_bad_breaker_options() -> None:
    with pytest.raises(ConfigError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ConfigError, match="reset_timeout"):
        CircuitBreaker(reset_timeout=timedelta(0))


class ManualTime:
    """A clock that moves only when ``sleep`` is called (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_startup_ramp_starts_slow_doubles_and_ends_unlimited() -> None:
    t = ManualTime()
    ramp = StartupRamp(10.0, 100, clock=t.clock, sleep=t.sleep)
    assert ramp.rate(0) == 100 and ramp.rate(1.0) == 200 and ramp.rate(10.0) is None
    ramp.admit(100)  # about one second's worth at the start
    assert 0.5 <= t.now <= 1.0
    t.now = 10.0
    waited = len(t.slept)
    ramp.admit(1_000_000)
    assert len(t.slept) == waited  # the ramp is over: no wait


def test_resilience_builds_a_ramp_only_when_asked() -> None:
    assert Resilience().ramp() is None
    assert isinstance(Resilience(startup_ramp=timedelta(seconds=5)).ramp(), StartupRamp)
    with pytest.raises(ConfigError, match="startup_ramp"):
        Resilience(startup_ramp=timedelta(0))
