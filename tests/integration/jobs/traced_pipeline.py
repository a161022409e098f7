"""A tracing-test job: JSON events from the event log through map (with poison), filter,
key_by and a rolling count into another topic, dead letters into a third.

``WF_LOG_DIR`` is the event log (topics ``events``, ``out`` and ``dead``); the
module-level ``flow`` exists when it is set (``weirflow run`` and its workers).
"""

from __future__ import annotations

import json
import os
from typing import Any

from weirflow import Dataflow
from weirflow.connectors import DeadLetterEventLogSink, EventLogSink, EventLogSource

POISON = {5, 77, 150}


def shape(event: dict[str, Any]) -> list[Any]:
    """``[id, user, 1]``; a poison event raises."""
    if event["id"] in POISON:
        raise ValueError(f"poison {event['id']}")
    return [event["id"], event["user"], 1]


def build(log_dir: str | os.PathLike[str]) -> Dataflow:
    """The job over the event log in ``log_dir``."""
    flow = Dataflow("traced")
    shaped = flow.source(EventLogSource(log_dir, "events", decode=json.loads), name="events").map(
        shape, name="shape", on_error="dead_letter"
    )
    shaped.dead_letters().sink(DeadLetterEventLogSink(log_dir, "dead"), name="dead")
    (
        shaped.filter(lambda r: r[0] % 4 != 3, name="some")
        .key_by(lambda r: r[1])
        .reduce(lambda a, b: [b[0], b[1], a[2] + b[2]], name="count")
        .sink(EventLogSink(log_dir, "out"), name="out")
    )
    return flow


if "WF_LOG_DIR" in os.environ:
    flow = build(os.environ["WF_LOG_DIR"])
