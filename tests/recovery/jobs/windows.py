"""A recovery-test job: sliding and session windows over one input, exactly-once outputs.

Per user: 2-second windows sliding by 500 ms, and session windows with a
:data:`SESSION_GAP_MS` gap, both of (count, sum) of the amounts. Input: topic
``events`` of ``WF_LOG_DIR`` (see ``chaos_helpers.make_input``), watermarks
``WF_OUT_OF_ORDERNESS_MS`` (default 1000) behind the largest time seen; outputs:
topics ``sliding`` and ``sessions``, records ``[user, start_ms, end_ms, count,
sum]``, and their late records (as ``[user, amount, timestamp_ms, watermark_ms]``)
in ``sliding.late`` and ``sessions.late``.
"""

import os
from datetime import timedelta
from typing import Any

from windowed_sum_core import CountSum, user_amounts

from weirflow import Dataflow, LateRecord, WindowResult
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import SessionWindows, SlidingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
SLIDING_SIZE_MS = 2000
SLIDING_SLIDE_MS = 500
SESSION_GAP_MS = 100


def row(r: WindowResult) -> list[Any]:
    """A window result as ``[key, start_ms, end_ms, count, sum]`` (the firing left out)."""
    return [r.key, r.start_ms, r.end_ms, *r.value]


def late_row(r: LateRecord) -> list[Any]:
    """A late record as ``[user, amount, timestamp_ms, watermark_ms]``."""
    return [*r.value, r.timestamp_ms, r.watermark_ms]


flow = Dataflow("windows")
per_user = user_amounts(
    flow,
    EventLogSource(LOG_DIR, "events", group="windows"),
    timedelta(milliseconds=int(os.environ.get("WF_OUT_OF_ORDERNESS_MS", "1000"))),
)
assigners = {
    "sliding": SlidingWindows(
        size=timedelta(milliseconds=SLIDING_SIZE_MS),
        slide=timedelta(milliseconds=SLIDING_SLIDE_MS),
    ),
    "sessions": SessionWindows(gap=timedelta(milliseconds=SESSION_GAP_MS)),
}
for name, assigner in assigners.items():
    results = per_user.window(assigner).aggregate(CountSum(), name=name)
    results.map(row, name=f"{name}_row").sink(EventLogSink(LOG_DIR, name), name=f"{name}_sink")
    late = results.late_records().map(late_row, name=f"{name}_late_row")
    late.sink(EventLogSink(LOG_DIR, f"{name}.late"), name=f"{name}_late_sink")
