"""A recovery-test job on Kafka: per user, 1-second tumbling windows of (count, sum).

Configured by environment variables so that ``weirflow run`` can load it:
``WF_KAFKA_BOOTSTRAP`` (the broker), ``WF_KAFKA_IN`` / ``WF_KAFKA_OUT`` (topics),
``WF_SINK_GUARANTEE`` (``exactly_once`` or ``at_least_once``), ``WF_THROTTLE_US``
(a per-record pause in the map, in microseconds, so that a test's random kills
land while the job runs).
"""

import json
import os
import time
from datetime import timedelta

from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import KafkaSink, KafkaSource
from weirflow.windows import TumblingWindows

BOOTSTRAP = os.environ["WF_KAFKA_BOOTSTRAP"]
THROTTLE_S = int(os.environ.get("WF_THROTTLE_US", "0")) / 1e6


def parse(raw: bytes) -> tuple[str, int]:
    e = json.loads(raw)
    if THROTTLE_S:
        time.sleep(THROTTLE_S)
    return (e["user"], e["amount"])


class CountSum:
    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, v: tuple[str, int], acc: tuple[int, int]) -> tuple[int, int]:
        return (acc[0] + 1, acc[1] + v[1])

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])

    def get_result(self, acc: tuple[int, int]) -> list[int]:
        return list(acc)


flow = Dataflow("kafka_windowed_sum")
(
    flow.source(
        KafkaSource(
            BOOTSTRAP, [os.environ["WF_KAFKA_IN"]], group_id="kafka_windowed_sum", bounded=True
        ),
        watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(seconds=1)),
        name="events",
    )
    .map(parse, name="parse")
    .key_by(lambda kv: kv[0])
    .window(TumblingWindows(size=timedelta(seconds=1)))
    .aggregate(CountSum(), name="per_user")
    .sink(
        KafkaSink(
            BOOTSTRAP,
            os.environ["WF_KAFKA_OUT"],
            guarantee=os.environ.get("WF_SINK_GUARANTEE", "exactly_once"),  # type: ignore[arg-type]
        ),
        name="results",
    )
)
