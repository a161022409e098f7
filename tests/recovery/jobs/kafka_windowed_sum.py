"""A recovery-test job on Kafka: per user, 1-second tumbling windows of (count, sum).

Configured by environment variables so that ``weirflow run`` can load it:
``WF_KAFKA_BOOTSTRAP`` (the broker), ``WF_KAFKA_IN`` / ``WF_KAFKA_OUT`` (topics),
``WF_SINK_GUARANTEE`` (``exactly_once`` or ``at_least_once``), ``WF_THROTTLE_US``
(see :mod:`windowed_sum_core`).
"""

import os

from windowed_sum_core import windowed_sum

from weirflow.connectors import KafkaSink, KafkaSource

BOOTSTRAP = os.environ["WF_KAFKA_BOOTSTRAP"]

flow = windowed_sum(
    "kafka_windowed_sum",
    KafkaSource(
        BOOTSTRAP, [os.environ["WF_KAFKA_IN"]], group_id="kafka_windowed_sum", bounded=True
    ),
    KafkaSink(
        BOOTSTRAP,
        os.environ["WF_KAFKA_OUT"],
        guarantee=os.environ.get("WF_SINK_GUARANTEE", "exactly_once"),  # type: ignore[arg-type]
    ),
)
