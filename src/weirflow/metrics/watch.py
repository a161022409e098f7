"""Built-in alerting: the alert conditions evaluated inside a job, without Prometheus.

A :class:`AlertWatcher` thread reads the job's latest
:class:`~weirflow.metrics.model.JobStatus` every ``period``, evaluates each
:class:`AlertCondition`, and on every change of a condition's
:class:`AlertState` (ok → firing, firing → ok) logs one line and posts one
JSON message to the webhook, if any: one message per change, never one per
record or per evaluation. The conditions are those of ``weirflow ops
alerts`` that a single job can see of itself (see :class:`Signal`); a job on
workers evaluates those its coordinator sees (:attr:`Signal.seen_by_coordinator`)
on the samples of :class:`weirflow.runtime.cluster_metrics.ClusterSampler`.

The webhook gets ``{"job", "alert", "signal", "threshold", "state",
"value", "at_ms"}`` with ``state`` ``"firing"`` or ``"resolved"``; a
webhook that does not answer within 5 s is logged and skipped (the next
change is posted again).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from weirflow.metrics.model import JobStatus

log = logging.getLogger("weirflow.alerts")

_WEBHOOK_TIMEOUT_S = 5
#: The range of the windowed signals (dead letters, restarts) unless told otherwise.
ALERT_WINDOW = timedelta(minutes=5)


class Signal(Enum):
    """What a condition compares with its threshold.

    ``LAG``: how far the source tasks' watermarks trail processing time (ms);
    ``LAG_RECORDS``: records not yet read, over every split; ``DEAD_LETTERS``:
    dead letters added within the watcher's window; ``CHECKPOINT_AGE``: time
    since the last completed checkpoint (ms); ``CHECKPOINT_FAILURES``:
    checkpoints triggered within the window that failed; ``RESTARTS``:
    restarts within the window; ``WATERMARK_STALLED``: how long the job's
    watermark has stood still while the sources read records (ms; 0 while
    it moves or nothing is read).
    """

    LAG = "lag"
    LAG_RECORDS = "lag_records"
    DEAD_LETTERS = "dead_letters"
    CHECKPOINT_AGE = "checkpoint_age"
    CHECKPOINT_FAILURES = "checkpoint_failures"
    RESTARTS = "restarts"
    WATERMARK_STALLED = "watermark_stalled"

    @property
    def is_duration(self) -> bool:
        """Whether the threshold is a duration (compared in ms) rather than a count."""
        return self in (Signal.LAG, Signal.CHECKPOINT_AGE, Signal.WATERMARK_STALLED)

    @property
    def seen_by_coordinator(self) -> bool:
        """Whether a job on workers can evaluate it from its coordinator's view.

        Workers' heartbeats carry their operators' counts (dead letters among
        them) and their sources' split lag, and the coordinator knows its
        restarts and completed checkpoints; watermarks and declined checkpoints
        stay in the workers.
        """
        return self in (
            Signal.LAG_RECORDS,
            Signal.DEAD_LETTERS,
            Signal.CHECKPOINT_AGE,
            Signal.RESTARTS,
        )


@dataclass(frozen=True)
class AlertCondition:
    """``signal > threshold``: fires while the signal is above the threshold.

    Attributes:
        signal: what is compared.
        threshold: in ms for duration signals, else a count.
        text: the condition as the user wrote it (``lag>5m``), its name in messages.
    """

    signal: Signal
    threshold: int
    text: str


class AlertState(Enum):
    """A condition's state; :func:`transition` is the only way between them."""

    OK = "resolved"
    FIRING = "firing"


def transition(current: AlertState, holds: bool) -> AlertState | None:
    """The next state when the condition ``holds`` (or not), or ``None`` for no change."""
    target = AlertState.FIRING if holds else AlertState.OK
    return target if target is not current else None


@dataclass(frozen=True)
class AlertEvent:
    """One change of a condition's state.

    Attributes:
        job: the job's name.
        condition: the condition that changed.
        state: its new state.
        value: the signal's value at the change (ms or count, as the threshold).
        at_ms: processing time of the sample that showed it (ms since the epoch).
    """

    job: str
    condition: AlertCondition
    state: AlertState
    value: int
    at_ms: int

    def to_json(self) -> dict[str, object]:
        """The webhook's message."""
        return {
            "job": self.job,
            "alert": self.condition.text,
            "signal": self.condition.signal.value,
            "threshold": self.condition.threshold,
            "state": self.state.value,
            "value": self.value,
            "at_ms": self.at_ms,
        }


class AlertEvaluator:
    """Evaluates conditions on successive samples; returns the changes.

    Args:
        conditions: what to watch.
        window: the range of the windowed signals (dead letters, restarts).
    """

    def __init__(self, conditions: list[AlertCondition], window: timedelta) -> None:
        self.conditions = conditions
        self.window_ms = int(window.total_seconds() * 1000)
        self.states = {c: AlertState.OK for c in conditions}
        self._dead_seen = 0
        self._dead_added: deque[tuple[int, int]] = deque()
        self._restarts: deque[tuple[int, int]] = deque()
        self._watermark: int | None = None
        self._watermark_since_ms: int | None = None

    def evaluate(self, status: JobStatus, now_ms: int) -> list[AlertEvent]:
        """Evaluate every condition on ``status``; return the state changes, in condition order."""
        values = self._signals(status, now_ms)
        events = []
        for c in self.conditions:
            value = values[c.signal]
            target = transition(self.states[c], value is not None and value > c.threshold)
            if target is None:
                continue
            self.states[c] = target
            events.append(AlertEvent(status.job, c, target, value or 0, status.sampled_ms))
        return events

    def _signals(self, status: JobStatus, now_ms: int) -> dict[Signal, int | None]:
        sources = {o.operator for o in status.operators if o.kind == "source"}
        lags = [
            t.watermark_lag_ms
            for t in status.tasks
            if t.head in sources and t.watermark_lag_ms is not None
        ]
        age = now_ms - status.last_checkpoint_ms if status.last_checkpoint_ms is not None else None
        return {
            Signal.LAG: max(lags) if lags else None,
            Signal.LAG_RECORDS: status.total_split_lag,
            Signal.DEAD_LETTERS: self._windowed_dead_letters(status, now_ms),
            Signal.CHECKPOINT_AGE: age,
            Signal.CHECKPOINT_FAILURES: sum(
                1
                for c in status.checkpoints
                if c.status == "failed"
                and c.trigger_ms is not None
                and c.trigger_ms > now_ms - self.window_ms
            ),
            Signal.RESTARTS: self._windowed(self._restarts, status.restarts, now_ms),
            Signal.WATERMARK_STALLED: self._watermark_stalled(status, now_ms),
        }

    def _watermark_stalled(self, status: JobStatus, now_ms: int) -> int:
        # a job without event time has no watermark to stall
        if (
            status.watermark_ms is None
            or status.watermark_ms != self._watermark
            or status.records_in_rate <= 0
        ):
            self._watermark = status.watermark_ms
            self._watermark_since_ms = now_ms
            return 0
        since = self._watermark_since_ms if self._watermark_since_ms is not None else now_ms
        return now_ms - since

    def _windowed_dead_letters(self, status: JobStatus, now_ms: int) -> int:
        # the count restarts at 0 with every attempt: a drop means a new attempt's own letters
        count = status.dead_letters
        added = count - self._dead_seen if count >= self._dead_seen else count
        self._dead_seen = count
        if added:
            self._dead_added.append((now_ms, added))
        while self._dead_added and self._dead_added[0][0] <= now_ms - self.window_ms:
            self._dead_added.popleft()
        return sum(n for _, n in self._dead_added)

    def _windowed(self, history: deque[tuple[int, int]], total: int, now_ms: int) -> int:
        """How much the monotonic ``total`` grew within the window."""
        history.append((now_ms, total))
        while len(history) > 1 and history[1][0] <= now_ms - self.window_ms:
            history.popleft()
        return total - history[0][1]


class AlertWatcher:
    """Evaluates the conditions every ``period`` on a daemon thread; logs and posts changes.

    Args:
        status: returns the job's latest sample (any thread).
        clock: processing time in ms since the epoch.
        conditions: what to watch.
        webhook: URL to POST each change to as JSON, or ``None`` (log only).
        period: time between evaluations.
        window: range of the windowed signals (dead letters, restarts).
        evaluator: the states to carry on from (a job on workers runs again after a
            rescale, under a new coordinator but with the same alerts); ``None``: new ones.
    """

    def __init__(
        self,
        status: Callable[[], JobStatus],
        clock: Callable[[], int],
        conditions: list[AlertCondition],
        webhook: str | None,
        period: timedelta = timedelta(seconds=5),
        window: timedelta = ALERT_WINDOW,
        evaluator: AlertEvaluator | None = None,
    ) -> None:
        self.status = status
        self.clock = clock
        self.webhook = webhook
        self.period = period
        self.evaluator = evaluator or AlertEvaluator(conditions, window)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="weirflow-alerts")

    def start(self) -> None:
        """Start evaluating."""
        self._thread.start()

    def stop(self) -> None:
        """Stop evaluating and wait for the thread (bounded by the webhook's timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=_WEBHOOK_TIMEOUT_S + 1)

    def check(self) -> list[AlertEvent]:
        """Evaluate once now, log and post the changes; return them."""
        status = self.status()
        if status.sampled_ms == 0:
            return []  # nothing sampled yet: no figure to judge
        events = self.evaluator.evaluate(status, self.clock())
        for e in events:
            self._announce(e)
        return events

    def _run(self) -> None:
        while not self._stop.wait(self.period.total_seconds()):
            self.check()

    def _announce(self, e: AlertEvent) -> None:
        level = logging.WARNING if e.state is AlertState.FIRING else logging.INFO
        log.log(
            level,
            "alert %s %s for job %s (value %d)",
            e.condition.text,
            e.state.value,
            e.job,
            e.value,
            extra={"fields": e.to_json()},
        )
        if self.webhook is None:
            return
        request = urllib.request.Request(
            self.webhook,
            data=json.dumps(e.to_json()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=_WEBHOOK_TIMEOUT_S) as r:
                r.read()
        except OSError as err:
            log.warning("alert webhook %s failed: %s", self.webhook, err)
