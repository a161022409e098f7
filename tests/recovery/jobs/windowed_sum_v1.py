"""The first version of the upgrade test's job: :mod:`windowed_sum` with its window state
in a ``msgspec.Struct`` (:mod:`upgrade_state`) and a filter that drops the results of the
users in ``DROPPED``. Configured as :mod:`windowed_sum` is."""

import os
from datetime import timedelta

from upgrade_state import CountTotals
from windowed_sum_core import user_amounts

from weirflow import Dataflow
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import TumblingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
DROPPED = frozenset(f"u{i}" for i in range(5))

flow = Dataflow("windowed_sum")
(
    user_amounts(flow, EventLogSource(LOG_DIR, "events", group="windowed_sum"))
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(CountTotals(), name="per_user")
    .filter(lambda result: result[0] not in DROPPED, name="drop_users")
    .sink(EventLogSink(LOG_DIR, "results"), name="results")
)
