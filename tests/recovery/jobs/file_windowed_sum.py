"""A recovery-test job: per user, 1-second tumbling windows of (count, sum), event log in, part
files out.

Configured by environment variables so that ``weirflow run`` can load it:
``WF_LOG_DIR`` (the event log with topic ``events``), ``WF_OUT_DIR`` (the
FileSink folder), ``WF_ROLLING`` (records per part file, to exercise rolling),
``WF_THROTTLE_US`` (a per-record pause in the map, in microseconds, so that a
test's random kills land while the job runs).
"""

import json
import os
import time
from datetime import timedelta

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import EventLogSource, FileSink
from weirflow.windows import TumblingWindows

LOG_DIR = os.environ["WF_LOG_DIR"]
OUT_DIR = os.environ["WF_OUT_DIR"]
ROLLING = int(os.environ.get("WF_ROLLING", "0")) or None
THROTTLE_S = int(os.environ.get("WF_THROTTLE_US", "0")) / 1e6


def parse(raw: bytes) -> tuple[str, int]:
    e = json.loads(raw)
    if THROTTLE_S:
        time.sleep(THROTTLE_S)
    return (e["user"], e["amount"])


class CountSum:
    """(count, sum) of the amounts in a window."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: tuple[str, int], acc: tuple[int, int]) -> tuple[int, int]:
        return (acc[0] + 1, acc[1] + value[1])

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])

    def get_result(self, acc: tuple[int, int]) -> list[int]:
        return list(acc)


flow = Dataflow("file_windowed_sum")
(
    flow.source(
        EventLogSource(LOG_DIR, "events"),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=1)),
        name="events",
    )
    .map(parse, name="parse")
    .key_by(lambda kv: kv[0])
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(CountSum(), name="per_user")
    .sink(FileSink(OUT_DIR, rolling_records=ROLLING), name="results")
)
