"""The ``windowed_count`` workload (WORKLOADS.md) as a job ``weirflow run --workers N`` can load.

Reads the events from topic ``events`` of the event log ``$WF_SCALING_INPUT``
(each value the event as JSON, record time = ``ts``, keyed by user), counts
and sums per user in 10-second tumbling windows, and writes
``[user, window_start_ms, count, sum]`` to topic ``results`` of
``$WF_SCALING_OUTPUT`` with an exactly-once sink.
"""

import os
from datetime import timedelta

import msgspec

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import TumblingWindows

WINDOW = timedelta(seconds=10)
OUT_OF_ORDERNESS = timedelta(milliseconds=500)

flow = Dataflow("scaling_windowed_count")
(
    flow.source(
        EventLogSource(os.environ["WF_SCALING_INPUT"], "events", decode=msgspec.json.decode),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(OUT_OF_ORDERNESS),
        name="events",
    )
    .map(lambda e: (e["user"], 1, e["amount"]), name="project")
    .key_by(lambda t: t[0])
    .window(TumblingWindows(size=WINDOW))
    .reduce(lambda a, b: (a[0], a[1] + b[1], a[2] + b[2]), name="per_user")
    .map(lambda r: (r.key, r.start_ms, r.value[1], r.value[2]), name="row")
    .sink(EventLogSink(os.environ["WF_SCALING_OUTPUT"], "results"), name="results")
)
