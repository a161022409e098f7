"""Prometheus alerting rules over weirflow's metrics, one per condition an on-call engineer acts on.

:func:`alert_rules` returns the rules as typed data; the ``weirflow ops
alerts`` command prints them as a Prometheus rule file. Every rule names the
section of ``docs/runbooks.md`` that explains it (its anchor is the rule's
name in lower case), so the two stay one list.

Two recording rules come first, because three alerts need them:

- ``weirflow:source_read_rate:records_per_second``: records the sources read,
  per job (``records_in`` of the operators that have split lag, i.e. sources);
- ``weirflow:source_lag_growth:records_per_second``: how fast the records
  not yet read grow (``deriv`` of the summed split lag; negative while the
  job catches up).

Ingestion, the rate at which records arrive in the source topics, is their
sum: what was read plus what piled up. No metric measures it directly, since
the topics belong to whoever writes them.

Scraping: weirflow's series carry their own ``job`` label (the dataflow's
name), so Prometheus must scrape them with ``honor_labels: true``; otherwise
the label is renamed ``exported_job`` and these rules see no job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from weirflow.metrics import names as n

RUNBOOKS = "docs/runbooks.md"

READ_RATE = "weirflow:source_read_rate:records_per_second"
LAG_GROWTH = "weirflow:source_lag_growth:records_per_second"

_PROCESSING_SHARE = 0.95
_TIMEOUT_SHARE = 0.8
_STALLED_CHECKPOINT_INTERVALS = 3


@dataclass(frozen=True)
class AlertThresholds:
    """Where the alerts fire.

    Attributes:
        lag_records: records not yet read (summed over a job's splits) above
            which the lag alert fires.
        lag: how far the sources' watermarks may trail processing time.
        latency: p99 of the sampled end-to-end latency above which the
            latency alert fires.
        checkpoint_interval: the jobs' checkpoint interval; no completed
            checkpoint for 3 × this fires an alert.
        checkpoint_timeout: the jobs' checkpoint timeout; a p99 checkpoint
            duration above 0.8 × this fires an alert.
        hold: how long a condition must hold before its alert fires (the
            rules' ``for``), for conditions that flap on their own.
        window: the range of ``rate``, ``increase``, ``deriv`` and ``changes``.
        restart_window: the range in which any restart fires an alert.
    """

    lag_records: int = 100_000
    lag: timedelta = timedelta(minutes=5)
    latency: timedelta = timedelta(seconds=30)
    checkpoint_interval: timedelta = timedelta(seconds=10)
    checkpoint_timeout: timedelta = timedelta(minutes=10)
    hold: timedelta = timedelta(minutes=5)
    window: timedelta = timedelta(minutes=5)
    restart_window: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class RecordingRule:
    """A Prometheus recording rule: ``record`` is the new series, ``expr`` its PromQL."""

    record: str
    expr: str


@dataclass(frozen=True)
class AlertRule:
    """One Prometheus alerting rule.

    Attributes:
        name: the alert's name (``alert:``); its runbook section's anchor is
            ``name.lower()``.
        expr: PromQL; every series it returns is one firing alert.
        hold: the rule's ``for`` (zero: fires at the first evaluation).
        severity: ``page`` (someone acts now) or ``ticket`` (today).
        summary: one line for the notification; may use ``{{ $labels.NAME }}``
            of the labels ``expr`` keeps.
    """

    name: str
    expr: str
    hold: timedelta
    severity: str
    summary: str

    @property
    def anchor(self) -> str:
        """The runbook section's anchor (``#`` not included)."""
        return self.name.lower()


def rule_file(
    thresholds: AlertThresholds, job: str | None = None, runbooks: str = RUNBOOKS
) -> dict[str, list[dict[str, object]]]:
    """The Prometheus rule file (as data, ready for a YAML dump): one group ``weirflow``.

    The recording rules come first in the group, so that the alerts evaluated
    after them in the same round read this round's values.

    Args:
        thresholds: where the alerts fire.
        job: restrict to this job's series; ``None``: every job.
        runbooks: where ``docs/runbooks.md`` is served; each rule's
            ``runbook_url`` is this plus ``#`` and the rule's anchor.

    Returns:
        ``{"groups": [{"name": "weirflow", "rules": [...]}]}``.
    """
    rules: list[dict[str, object]] = [
        {"record": r.record, "expr": r.expr} for r in recording_rules(job, thresholds.window)
    ]
    for a in alert_rules(thresholds, job):
        rule: dict[str, object] = {"alert": a.name, "expr": a.expr}
        if a.hold:
            rule["for"] = duration_text(a.hold)
        rule["labels"] = {"severity": a.severity}
        rule["annotations"] = {"summary": a.summary, "runbook_url": f"{runbooks}#{a.anchor}"}
        rules.append(rule)
    return {"groups": [{"name": "weirflow", "rules": rules}]}


def duration_text(d: timedelta) -> str:
    """Render ``d`` as a Prometheus duration (``90s`` → ``1m30s``; whole ms at least).

    Raises:
        ValueError: ``d`` is negative.
    """
    ms = round(d.total_seconds() * 1000)
    if ms < 0:
        raise ValueError(f"a Prometheus duration cannot be negative: {d}")
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        q, ms = divmod(ms, size)
        if q:
            out += f"{q}{unit}"
    return out


def _seconds(d: timedelta) -> str:
    """``d`` in seconds as PromQL's number literal (no trailing ``.0``)."""
    s = d.total_seconds()
    return str(int(s)) if s == int(s) else repr(s)


class _Selectors:
    """Series selectors restricted to one job (or all jobs)."""

    def __init__(self, job: str | None) -> None:
        self.matcher = f'{{job="{_escape(job)}"}}' if job is not None else ""

    def __call__(self, metric: str) -> str:
        return metric + self.matcher


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def recording_rules(
    job: str | None = None, window: timedelta = timedelta(minutes=5)
) -> list[RecordingRule]:
    """The recording rules the alerts build on (see the module docstring).

    Args:
        job: restrict to this job's series; ``None``: every job.
        window: the range of ``rate`` and ``deriv``.
    """
    s = _Selectors(job)
    w = duration_text(window)
    lag = s(n.SPLIT_LAG)
    return [
        RecordingRule(
            READ_RATE,
            f"sum by (job) (sum by (job, operator) (rate({s(n.RECORDS_IN + '_total')}[{w}]))"
            f" and on (job, operator) {lag})",
        ),
        RecordingRule(LAG_GROWTH, f"sum by (job) (deriv({lag}[{w}]))"),
    ]


def alert_rules(thresholds: AlertThresholds, job: str | None = None) -> list[AlertRule]:
    """Every alerting rule, in the order of ``docs/runbooks.md``.

    Args:
        thresholds: where they fire.
        job: restrict to this job's series; ``None``: every job.

    Returns:
        The rules; they read the recording rules of :func:`recording_rules`.
    """
    t = thresholds
    s = _Selectors(job)
    w = duration_text(t.window)
    hold = t.hold
    zero = timedelta(0)
    letters = s(n.DEAD_LETTERS_BY_ERROR + "_total")
    by_error = "sum by (job, operator, error_type)"
    stalled = t.checkpoint_interval * _STALLED_CHECKPOINT_INTERVALS
    stalled_range = duration_text(stalled)
    source_tasks = f'label_replace({s(n.SPLIT_LAG)}, "task", "$1", "operator", "(.*)")'
    return [
        AlertRule(
            "WeirflowSourceLagRecords",
            f"sum by (job) ({s(n.SPLIT_LAG)}) > {t.lag_records}",
            hold,
            "page",
            f"Job {{{{ $labels.job }}}} has more than {t.lag_records} records not yet read.",
        ),
        AlertRule(
            "WeirflowSourceLagSeconds",
            f"max by (job) ({s(n.WATERMARK_LAG)} and on (job, task) {source_tasks}) / 1000"
            f" > {_seconds(t.lag)}",
            hold,
            "page",
            f"Job {{{{ $labels.job }}}}'s sources are more than {duration_text(t.lag)} behind.",
        ),
        AlertRule(
            "WeirflowSourceLagGrowing",
            f"{LAG_GROWTH}{s.matcher} > 0",
            hold,
            "ticket",
            "Job {{ $labels.job }} reads more slowly than records arrive: its lag grows.",
        ),
        AlertRule(
            "WeirflowProcessingBehindIngestion",
            f"{READ_RATE}{s.matcher} < {_PROCESSING_SHARE} * ({READ_RATE}{s.matcher}"
            f" + {LAG_GROWTH}{s.matcher})",
            hold,
            "page",
            f"Job {{{{ $labels.job }}}} processes less than {_PROCESSING_SHARE} × what arrives.",
        ),
        AlertRule(
            "WeirflowDeadLetters",
            # a series born in the window counts too: increase() ignores a counter's first value
            f"{by_error} (increase({letters}[{w}])) > 0"
            f" or {by_error} ({letters} unless {letters} offset {w})",
            zero,
            "ticket",
            "Operator {{ $labels.operator }} of job {{ $labels.job }} dead-letters records "
            "({{ $labels.error_type }}).",
        ),
        AlertRule(
            "WeirflowEndToEndLatencyHigh",
            f"histogram_quantile(0.99, sum by (job, le) "
            f"(rate({s(n.END_TO_END_LATENCY + '_bucket')}[{w}]))) > {_seconds(t.latency)}",
            hold,
            "page",
            f"Job {{{{ $labels.job }}}}'s p99 end-to-end latency is above "
            f"{duration_text(t.latency)}.",
        ),
        AlertRule(
            "WeirflowCheckpointsStalled",
            # the age counts from the last completed checkpoint; before the first one, a
            # job whose checkpoints are triggered but never complete is stalled too
            f"{s(n.CHECKPOINT_AGE)} > {_seconds(stalled)}"
            f" or (max_over_time({s(n.CHECKPOINTS_COMPLETED + '_total')}[{stalled_range}]) == 0"
            f" and min_over_time({s(n.CHECKPOINTS_TRIGGERED + '_total')}[{stalled_range}]) > 0)",
            zero,
            "page",
            "Job {{ $labels.job }} has completed no checkpoint for "
            f"{_STALLED_CHECKPOINT_INTERVALS} checkpoint intervals.",
        ),
        AlertRule(
            "WeirflowCheckpointFailures",
            f"increase({s(n.CHECKPOINTS_FAILED + '_total')}[{w}]) > 0",
            zero,
            "ticket",
            "Checkpoints of job {{ $labels.job }} fail.",
        ),
        AlertRule(
            "WeirflowCheckpointDurationNearTimeout",
            f"{s(n.CHECKPOINT_DURATION_P99)} > {_TIMEOUT_SHARE} * {_seconds(t.checkpoint_timeout)}",
            zero,
            "ticket",
            f"Job {{{{ $labels.job }}}}'s checkpoints take more than {_TIMEOUT_SHARE} × "
            "the checkpoint timeout.",
        ),
        AlertRule(
            "WeirflowRestarts",
            f"increase({s(n.RESTARTS + '_total')}[{duration_text(t.restart_window)}]) > 0",
            zero,
            "ticket",
            f"Job {{{{ $labels.job }}}} restarted in the last {duration_text(t.restart_window)}.",
        ),
        AlertRule(
            "WeirflowCircuitBreakerOpen",
            f"max by (job, connector) ({s(n.CIRCUIT_BREAKER_STATE)}) == 1",
            zero,
            "page",
            "The circuit breaker of {{ $labels.connector }} in job {{ $labels.job }} is open.",
        ),
        AlertRule(
            "WeirflowWatermarkStalled",
            f"count by (job) (changes({s(n.WATERMARK)}[{w}]) == 0)"
            f" and on (job) {READ_RATE}{s.matcher} > 0",
            zero,
            "ticket",
            "A watermark of job {{ $labels.job }} stands still while records arrive.",
        ),
    ]
