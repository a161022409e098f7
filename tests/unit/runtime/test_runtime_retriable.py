"""Which failures the restart strategy retries (``weirflow.errors.is_retriable``), and that
a run fails at once, after one attempt, on one that recurs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from weirflow import CheckpointConfig, Dataflow, JobFailedError, OperatorError, RestartStrategy
from weirflow.checkpoint import CheckpointFailuresExceededError, CheckpointStorageError
from weirflow.connectors import CollectSink, EventLogSource, IterableSource
from weirflow.errors import ConfigError, is_retriable
from weirflow.eventlog import EventLog, LogBusyError, UnknownTopicError
from weirflow.runtime import RunListener


def _operator_error(cause: BaseException | None) -> OperatorError:
    error = OperatorError("m[0/1] failed", operator="m", subtask=0, parallelism=1, record=1)
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (_operator_error(ValueError("bad record")), False),
        (_operator_error(None), False),
        (_operator_error(ConnectionError("refused")), True),
        (_operator_error(TimeoutError()), True),
        (_operator_error(LogBusyError("busy")), True),
        (UnknownTopicError("no topic 'clicks'"), False),
        (ConfigError("bad option"), False),
        (CheckpointStorageError("not writable"), False),
        (CheckpointFailuresExceededError("job", 4, "disk full"), False),
        (LogBusyError("busy"), True),
        (JobFailedError("task m[0/1] failed: RuntimeError: x"), True),
        (OSError("disk I/O error"), True),
        (RuntimeError("unknown"), True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_classification(error: BaseException, retriable: bool) -> None:
    assert is_retriable(error) is retriable


def _flow(error: Exception, calls: list[int]) -> Dataflow:
    def fails_on_5(x: int) -> int:
        if x == 5:
            calls.append(x)
            raise error
        return x

    flow = Dataflow("retriable")
    flow.source(IterableSource(list(range(10))), name="src").map(fails_on_5, name="m").sink(
        CollectSink()
    )
    return flow


def test_a_user_function_error_fails_the_run_after_one_attempt(tmp_path: Path) -> None:
    """Scenario: a map raises ValueError on one record under on_error="fail" and a strategy
    allowing 5 restarts: one attempt, then the run fails with the user's error."""
    calls: list[int] = []
    with pytest.raises(OperatorError, match="ValueError: bad record"):
        _flow(ValueError("bad record"), calls).run(
            checkpoint=CheckpointConfig(storage=str(tmp_path)),
            restart=RestartStrategy.fixed_delay(5, timedelta(0)),
        )
    assert calls == [5]


def test_a_transient_user_function_error_is_restarted(tmp_path: Path) -> None:
    """Scenario: the same map raises ConnectionError every time: 1 attempt + 2 restarts."""
    calls: list[int] = []
    with pytest.raises(OperatorError, match="ConnectionError"):
        _flow(ConnectionError("refused"), calls).run(
            checkpoint=CheckpointConfig(storage=str(tmp_path)),
            restart=RestartStrategy.fixed_delay(2, timedelta(0)),
        )
    assert calls == [5, 5, 5]


class _Attempts(RunListener):
    def __init__(self) -> None:
        self.started = 0

    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        self.started += 1


def test_a_missing_source_topic_fails_the_run_after_one_attempt(tmp_path: Path) -> None:
    """Scenario: the source's topic does not exist, 5 restarts allowed: one attempt."""
    with EventLog(tmp_path / "log") as log:
        log.create_topic("other", 1)
    flow = Dataflow("missing_topic")
    flow.source(EventLogSource(str(tmp_path / "log"), "clicks"), name="src").sink(CollectSink())
    attempts = _Attempts()
    with pytest.raises(UnknownTopicError, match="clicks"):
        flow.run(
            checkpoint=CheckpointConfig(storage=str(tmp_path / "chk")),
            restart=RestartStrategy.fixed_delay(5, timedelta(0)),
            listener=attempts,
        )
    assert attempts.started == 1
