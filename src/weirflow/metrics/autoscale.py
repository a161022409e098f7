"""Lag-driven rescaling decisions: when a job should run at another parallelism.

The signal is the time the sources need to catch up at their current read
rate, ``lag_records / read rate`` (seconds; unbounded when records wait and
nothing is read). It does not depend on event time, so an idle job (nothing
to read) has no lag rather than an ever older watermark. Rules, checked on
every sample:

- **up**: the lag stayed above ``target_lag`` for the whole ``sustain``
  period and the parallelism is below ``max``: double it (at most ``max``);
- **down**: nothing waited to be read (``lag_records == 0``) for the whole
  ``sustain`` period and the parallelism is above ``min``: halve it (at least
  ``min``);
- never within ``cooldown`` of the previous rescale (or of the start), so a
  job rescales at most once per cool-down.

Carrying a decision out (stop with a final checkpoint, restore at the new
parallelism) is the caller's job; see ``weirflow run --autoscale``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from weirflow.metrics.model import JobStatus


class Direction(Enum):
    """Which way a decision rescales."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class AutoscaleConfig:
    """Bounds and pace of lag-driven rescaling.

    Attributes:
        min_parallelism: never below this (>= 1).
        max_parallelism: never above this (>= ``min_parallelism``).
        target_lag: catch-up time above which the job scales up.
        cooldown: minimum time between rescales (and after the start).
        sustain: how long a condition must hold before a decision.

    Raises:
        ValueError: bounds out of order, or a non-positive duration.
    """

    min_parallelism: int = 1
    max_parallelism: int = 4
    target_lag: timedelta = timedelta(seconds=30)
    cooldown: timedelta = timedelta(minutes=5)
    sustain: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if not 1 <= self.min_parallelism <= self.max_parallelism:
            raise ValueError(
                f"autoscale needs 1 <= min <= max, got min={self.min_parallelism} "
                f"max={self.max_parallelism}"
            )
        for name in ("target_lag", "sustain"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"autoscale {name} must be positive")
        if self.cooldown < timedelta(0):
            raise ValueError("autoscale cooldown cannot be negative")


@dataclass(frozen=True)
class Decision:
    """A rescale the policy asks for.

    Attributes:
        direction: up or down.
        parallelism: the current parallelism.
        target: the parallelism to restore at.
        lag_s: the catch-up time (seconds) at the decision; ``inf`` when nothing is read.
        reason: one line for the log.
    """

    direction: Direction
    parallelism: int
    target: int
    lag_s: float
    reason: str


def catch_up_seconds(status: JobStatus) -> float:
    """Seconds the sources need to read what waits, at their current rate (``inf``: stuck)."""
    lag = status.total_split_lag
    if lag == 0:
        return 0.0
    rate = status.records_in_rate
    return lag / rate if rate > 0 else math.inf


class AutoscalePolicy:
    """Turns successive samples into at most one :class:`Decision` (see the module).

    Args:
        config: the bounds and pace.
        parallelism: the job's current parallelism.
        last_rescale_ms: when the job last rescaled or started (ms since the epoch).
    """

    def __init__(self, config: AutoscaleConfig, parallelism: int, last_rescale_ms: int) -> None:
        self.config = config
        self.parallelism = parallelism
        self.last_rescale_ms = last_rescale_ms
        self._history: deque[tuple[int, float, int]] = deque()

    def observe(self, status: JobStatus, now_ms: int) -> Decision | None:
        """Add a sample; return a decision when one is due, else ``None``."""
        c = self.config
        sustain_ms = int(c.sustain.total_seconds() * 1000)
        lag_s = catch_up_seconds(status)
        self._history.append((now_ms, lag_s, status.total_split_lag))
        while len(self._history) > 1 and self._history[1][0] <= now_ms - sustain_ms:
            self._history.popleft()
        if now_ms - self.last_rescale_ms < c.cooldown.total_seconds() * 1000:
            return None
        if now_ms - self._history[0][0] < sustain_ms:
            return None  # not watched for a whole sustain period yet
        target_s = c.target_lag.total_seconds()
        p = self.parallelism
        if p < c.max_parallelism and all(lag > target_s for _, lag, _ in self._history):
            target = min(c.max_parallelism, p * 2)
            return Decision(
                Direction.UP,
                p,
                target,
                lag_s,
                f"catch-up time above {target_s:g} s for {c.sustain.total_seconds():g} s",
            )
        if p > c.min_parallelism and all(records == 0 for _, _, records in self._history):
            return Decision(
                Direction.DOWN,
                p,
                max(c.min_parallelism, p // 2),
                lag_s,
                f"nothing to read for {c.sustain.total_seconds():g} s",
            )
        return None
