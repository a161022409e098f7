"""A recovery-test job: per user, 1-second tumbling windows of (count, sum), event log in and out.

Configured by environment variables so that ``weirflow run`` can load it:
``WF_LOG_DIR`` (the event log), ``WF_SINK_GUARANTEE`` (``exactly_once`` or
``at_least_once``), ``WF_THROTTLE_US`` (see :mod:`windowed_sum_core`).
"""

import os

from windowed_sum_core import windowed_sum

from weirflow.connectors import EventLogSink, EventLogSource

LOG_DIR = os.environ["WF_LOG_DIR"]

flow = windowed_sum(
    "windowed_sum",
    EventLogSource(LOG_DIR, "events", group="windowed_sum"),
    EventLogSink(
        LOG_DIR,
        "results",
        guarantee=os.environ.get("WF_SINK_GUARANTEE", "exactly_once"),  # type: ignore[arg-type]
    ),
)
