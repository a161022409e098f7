"""A recovery-test job: Nexmark queries from the deterministic NexmarkSource, exactly once.

Environment: ``WF_LOG_DIR`` (the event log receiving the output),
``WF_NEXMARK_QUERIES`` (comma-separated names from ``benchmarks/nexmark/queries.py``,
default all of them), ``WF_NEXMARK_EVENTS`` (default 24,000) and
``WF_NEXMARK_SPLITS`` (default 3). All queries read one source; query ``q``
writes its results as JSON arrays to topic ``nexmark.q`` (which must exist)
through an exactly-once EventLogSink. ``WF_THROTTLE_US`` pauses after each
event (microseconds), so that a test's failures land while the job runs, until
``WF_THROTTLE_RELEASE`` ends it (see :mod:`windowed_sum_core`).
"""

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from windowed_sum_core import pause

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import EventLogSink, NexmarkSource

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks" / "nexmark"))

from queries import QUERIES

LOG_DIR = os.environ["WF_LOG_DIR"]
SELECTED = os.environ.get("WF_NEXMARK_QUERIES", ",".join(QUERIES)).split(",")
EVENTS = int(os.environ.get("WF_NEXMARK_EVENTS", "24000"))
SPLITS = int(os.environ.get("WF_NEXMARK_SPLITS", "3"))
THROTTLE_S = int(os.environ.get("WF_THROTTLE_US", "0")) / 1e6


def topic(query: str) -> str:
    """The output topic of ``query``."""
    return f"nexmark.{query}"


def throttled(event: Any) -> Any:
    """The event, after ``THROTTLE_S`` seconds (until released)."""
    pause(THROTTLE_S)
    return event


def as_row(value: Any) -> tuple[Any, ...]:
    """A query result as a plain tuple (q0's bids are msgspec structs)."""
    return msgspec.structs.astuple(value) if isinstance(value, msgspec.Struct) else value


flow = Dataflow("nexmark_queries")
events = flow.source(
    NexmarkSource(EVENTS, splits=SPLITS),
    watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=4)),
    name="nexmark",
)
if THROTTLE_S:
    events = events.map(throttled, name="throttle")
for query in SELECTED:
    QUERIES[query](events).map(as_row, name=f"{query}_row").sink(
        EventLogSink(LOG_DIR, topic(query)), name=f"{query}_sink"
    )
