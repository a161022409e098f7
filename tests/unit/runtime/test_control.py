"""Control messages: every one round-trips through its frame encoding, and fencing by attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from weirflow.checkpoint import CheckpointConfig
from weirflow.metrics.autoscale import AutoscaleConfig
from weirflow.runtime import control
from weirflow.runtime.restart import RestartStrategy

MESSAGES = [
    control.Register("h:1", 2, "h", "127.0.0.1:5", 42),
    control.Welcome(500, 2000),
    control.Deploy(3, "/j.py:flow", 4, 128, [0, 1], {0: "a", 1: "a", 2: "b", 3: "b"},
                   {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, "/chk", "exactly_once", None),
    control.Running(3),
    control.Trigger(3, 7, 1_700_000_000_000, stop=True),
    control.Acknowledge(3, 7, b"\x80\x05snapshot"),
    control.Decline(3, 7, "map[0/4]", "disk full"),
    control.Complete(3, 7),
    control.TasksFinished(3),
    control.Finish(3),
    control.Finished(3, {"map": [1, 1, 0, 0, 0]}),
    control.Failed(3, "ValueError: bad", False),
    control.Cancel(3),
    control.Heartbeat(3, {"map": {0: [5, 5, 0, 0, 0]}}),
    control.Shutdown("the job ended"),
    control.Submit("/j.py", 2, 128, CheckpointConfig(storage="/chk", interval=timedelta(
        milliseconds=200)), "exactly_once", "latest", RestartStrategy.fixed_delay(3)),
    control.Submit("/j.py", 1, 128, None, "exactly_once", None, RestartStrategy.fixed_delay(3),
        autoscale=AutoscaleConfig(1, 2, timedelta(milliseconds=500), timedelta(seconds=1))),
    control.StopJob(),
    control.StopJob(savepoint=True),
    control.JobEvent("checkpoint 1 completed"),
    control.JobDone(True, job="j", counts={"map": [1, 1, 0, 0, 0]}),
    control.StatusRequest(),
    control.Status("j", 4, 3, 1, 7, [control.WorkerInfo("a", "h", 2, "deployed", [0, 1])]),
]  # fmt: skip


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: control.Message) -> None:
    assert control.decode_message(control.encode_message(message)) == message


def test_messages_of_another_attempt_are_recognised() -> None:
    assert control.of_other_attempt(control.Complete(2, 7), 3)
    assert not control.of_other_attempt(control.Complete(3, 7), 3)
    assert not control.of_other_attempt(control.Shutdown("x"), 3)  # belongs to no attempt
