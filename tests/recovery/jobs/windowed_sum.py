"""A recovery-test job: per user, 1-second tumbling windows of (count, sum), event log in and out.

Configured by environment variables so that ``weirflow run`` can load it:
``WF_LOG_DIR`` (the event log), ``WF_SINK_GUARANTEE`` (``exactly_once`` or
``at_least_once``), ``WF_THROTTLE_US`` (a per-record pause in the map, in
microseconds, so that a test's random kills land while the job runs).
"""

import json
import os
import time
from datetime import timedelta

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import TumblingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
THROTTLE_S = int(os.environ.get("WF_THROTTLE_US", "0")) / 1e6


def parse(raw: bytes) -> tuple[str, int]:
    e = json.loads(raw)
    if THROTTLE_S:
        time.sleep(THROTTLE_S)
    return (e["user"], e["amount"])


flow = Dataflow("windowed_sum")
(
    flow.source(
        EventLogSource(LOG_DIR, "events", group="windowed_sum"),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=1)),
        name="events",
    )
    .map(parse, name="parse")
    .key_by(lambda kv: kv[0])
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(
        type(
            "CountSum",
            (),
            {
                "create_accumulator": lambda self: (0, 0),
                "add": lambda self, v, acc: (acc[0] + 1, acc[1] + v[1]),
                "merge": lambda self, a, b: (a[0] + b[0], a[1] + b[1]),
                "get_result": lambda self, acc: list(acc),
            },
        )(),
        name="per_user",
    )
    .sink(
        EventLogSink(
            LOG_DIR,
            "results",
            guarantee=os.environ.get("WF_SINK_GUARANTEE", "exactly_once"),  # type: ignore[arg-type]
        ),
        name="results",
    )
)
