"""A recovery-test job: sliding and session windows over one input, two exactly-once outputs.

Per user: 2-second windows sliding by 500 ms, and session windows with a
:data:`SESSION_GAP_MS` gap, both of (count, sum) of the amounts. Input: topic
``events`` of ``WF_LOG_DIR`` (see ``chaos_helpers.make_input``); outputs:
topics ``sliding`` and ``sessions``, records ``[user, start_ms, end_ms, count, sum]``.
"""

import os
from datetime import timedelta
from typing import Any

from windowed_sum_core import CountSum, user_amounts

from weirflow import Dataflow, WindowResult
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import SessionWindows, SlidingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
SLIDING_SIZE_MS = 2000
SLIDING_SLIDE_MS = 500
SESSION_GAP_MS = 100


def row(r: WindowResult) -> list[Any]:
    """A window result as ``[key, start_ms, end_ms, count, sum]`` (the firing left out)."""
    return [r.key, r.start_ms, r.end_ms, *r.value]


flow = Dataflow("windows")
per_user = user_amounts(flow, EventLogSource(LOG_DIR, "events", group="windows"))
sliding = SlidingWindows(
    size=timedelta(milliseconds=SLIDING_SIZE_MS), slide=timedelta(milliseconds=SLIDING_SLIDE_MS)
)
per_user.window(sliding).aggregate(CountSum(), name="sliding").map(row, name="sliding_row").sink(
    EventLogSink(LOG_DIR, "sliding"), name="sliding_sink"
)
sessions = SessionWindows(gap=timedelta(milliseconds=SESSION_GAP_MS))
per_user.window(sessions).aggregate(CountSum(), name="sessions").map(row, name="sessions_row").sink(
    EventLogSink(LOG_DIR, "sessions"), name="sessions_sink"
)
