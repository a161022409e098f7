"""An autoscaling-test job: a running count per user, event log in and out.

``WF_LOG_DIR`` is the event log (topic ``events`` in: JSON ``{"user": ...}``
keyed by user; ``counts`` out); ``WF_SLEEP_US`` a pause per record, so that
the job falls behind a fast producer. Each user's records sit in one
partition in order, so the output, ``[user, n]`` for n = 1 … (records of the
user), is the same at every parallelism and across rescales, exactly once.
"""

import json
import os
import time

from weirflow import Dataflow
from weirflow.connectors import EventLogSink, EventLogSource

LOG_DIR = os.environ["WF_LOG_DIR"]
SLEEP_S = int(os.environ.get("WF_SLEEP_US", "0")) / 1e6


def one(event: dict) -> tuple[str, int]:
    """``(user, 1)``, after the configured pause."""
    if SLEEP_S:
        time.sleep(SLEEP_S)
    return (event["user"], 1)


flow = Dataflow("running_counts")
(
    flow.source(EventLogSource(LOG_DIR, "events", decode=json.loads, bounded=False), name="events")
    .map(one, name="one")
    .key_by(lambda kv: kv[0])
    .reduce(lambda a, b: (a[0], a[1] + b[1]), name="count")
    .sink(EventLogSink(LOG_DIR, "counts", encode=lambda kv: json.dumps(kv).encode()), name="out")
)
