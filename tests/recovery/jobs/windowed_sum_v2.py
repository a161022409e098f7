"""The next version of :mod:`windowed_sum_v1`, for upgrade tests: its filter changed (it
drops the results of the users in ``DROPPED``, twice as many as before) and one operator
added after it (a filter that drops the results of user ``u10``); run with
``WF_STATE_VERSION=2``, its window state's Struct gains a field (:mod:`upgrade_state`).
Configured as :mod:`windowed_sum` is."""

import os
from datetime import timedelta

from upgrade_state import CountTotals
from windowed_sum_core import user_amounts

from weirflow import Dataflow
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import TumblingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
DROPPED = frozenset(f"u{i}" for i in range(10))
ADDED_DROP = "u10"

flow = Dataflow("windowed_sum")
(
    user_amounts(flow, EventLogSource(LOG_DIR, "events", group="windowed_sum"))
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(CountTotals(), name="per_user")
    .filter(lambda result: result[0] not in DROPPED, name="drop_users")
    .filter(lambda result: result[0] != ADDED_DROP, name="drop_one_more")
    .sink(EventLogSink(LOG_DIR, "results"), name="results")
)
