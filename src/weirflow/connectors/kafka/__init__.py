"""Kafka connector on ``confluent-kafka`` (the ``kafka`` extra).

Importing this package without it raises a :class:`ConfigError` naming the
extra. Splits are ``"<topic>/<partition>"``, as for the event log. Modules:
``client`` (shared errors and helpers), ``source_reader``, ``source``,
``sink_writer``, ``sink``, ``dead_letter_replay`` (reading and replaying
dead-letter topics) and ``dead_letters``; each imports only ``client`` and
the ones before it, so there is no import cycle. The public
names are re-exported here and (lazily) from :mod:`weirflow.connectors`.
"""

from weirflow.connectors.kafka.client import KafkaDeliveryError, KafkaError, KafkaFencedError
from weirflow.connectors.kafka.dead_letter_replay import KafkaDeadLetters
from weirflow.connectors.kafka.dead_letters import DeadLetterKafkaSink, dead_letter_headers
from weirflow.connectors.kafka.sink import KafkaSink, KafkaSinkOptions
from weirflow.connectors.kafka.source import KafkaSource, KafkaSourceOptions

__all__ = [
    "DeadLetterKafkaSink",
    "KafkaDeadLetters",
    "KafkaDeliveryError",
    "KafkaError",
    "KafkaFencedError",
    "KafkaSink",
    "KafkaSinkOptions",
    "KafkaSource",
    "KafkaSourceOptions",
    "dead_letter_headers",
]
