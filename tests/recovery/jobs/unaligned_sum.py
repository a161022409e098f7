"""A recovery-test job for unaligned checkpoints: :mod:`windowed_sum_core`'s per-user
1-second windows of (count, sum), with a slow keyed stage in between, so that the job runs
under backpressure and its checkpoints hold in-flight records.

The stage after the first ``key_by`` (parallelism 2: each subtask reads every source
subtask's channel) pauses ``WF_SLOW_US`` microseconds per record; a second ``key_by``
feeds the windows. Configured like ``windowed_sum.py`` (``WF_LOG_DIR``).
"""

import os
import time
from datetime import timedelta
from typing import Any

from windowed_sum_core import CountSum, user_amounts

from weirflow import Dataflow
from weirflow.connectors import EventLogSink, EventLogSource
from weirflow.windows import TumblingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
SLOW_S = int(os.environ.get("WF_SLOW_US", "0")) / 1e6


def slow(kv: Any) -> Any:
    """The identity, ``WF_SLOW_US`` late: the bottleneck that causes backpressure."""
    if SLOW_S:
        time.sleep(SLOW_S)
    return kv


flow = Dataflow("unaligned_sum")
(
    user_amounts(flow, EventLogSource(LOG_DIR, "events", group="unaligned_sum"))
    .map(slow, name="slow")
    .key_by(lambda kv: kv[0])
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(CountSum(), name="per_user")
    .sink(EventLogSink(LOG_DIR, "results", guarantee="exactly_once"), name="results")
)
