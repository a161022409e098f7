"""A recovery-test job: per user, 1-second tumbling windows of (count, sum), event log in, part
files out.

Configured by environment variables so that ``weirflow run`` can load it:
``WF_LOG_DIR`` (the event log with topic ``events``), ``WF_OUT_DIR`` (the
FileSink folder), ``WF_ROLLING`` (records per part file, to exercise rolling),
``WF_THROTTLE_US`` (see :mod:`windowed_sum_core`).
"""

import os

from windowed_sum_core import windowed_sum

from weirflow.connectors import EventLogSource, FileSink

flow = windowed_sum(
    "file_windowed_sum",
    EventLogSource(os.environ["WF_LOG_DIR"], "events"),
    FileSink(
        os.environ["WF_OUT_DIR"], rolling_records=int(os.environ.get("WF_ROLLING", "0")) or None
    ),
)
