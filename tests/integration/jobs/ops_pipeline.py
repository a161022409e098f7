"""An operations-test job: JSON events from the event log, counted per user in 1 s windows.

Configured by environment variables so that ``weirflow run`` can load it:
``WF_LOG_DIR`` (the event log: topics ``events`` in, ``results`` and
``dead`` out), ``WF_SLEEP_US`` (a pause per record in the ``work`` map, to
make the job slower than its input; the map runs behind a channel, so that
the source's records and barriers queue in front of it). Records that are not JSON become dead
letters of the source, ``events``.
"""

import json
import os
import time
from datetime import timedelta

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import TumblingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
SLEEP_S = int(os.environ.get("WF_SLEEP_US", "0")) / 1e6


def work(event: dict) -> tuple[str, int]:
    """``(user, 1)``, after the configured pause."""
    if SLEEP_S:
        time.sleep(SLEEP_S)
    return (event["user"], 1)


flow = Dataflow("ops_pipeline")
events = flow.source(
    EventLogSource(LOG_DIR, "events", decode=json.loads, bounded=False),
    watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=200)),
    name="events",
    on_error="dead_letter",
)
(
    events.rebalance()
    .map(work, name="work")
    .key_by(lambda kv: kv[0])
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .reduce(lambda a, b: (a[0], a[1] + b[1]), name="per_user")
    .sink(EventLogSink(LOG_DIR, "results", encode=lambda r: json.dumps(r).encode()), name="results")
)
events.dead_letters().rebalance().sink(
    EventLogSink(LOG_DIR, "dead", encode=lambda d: d.message.encode()), name="dead"
)
