"""The Kafka client pieces the source and the sink share: the ``confluent-kafka``
import, errors, split ids and the broker-error mapping.

Importing this module without ``confluent-kafka`` (the ``kafka`` extra)
raises a :class:`ConfigError` naming the extra.
"""

from __future__ import annotations

import time
from typing import Any

from weirflow.errors import ConfigError, WeirflowError

try:
    import confluent_kafka as ck
    import confluent_kafka.admin as ck_admin  # noqa: F401 - for the modules that administer topics
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "the Kafka connector needs confluent-kafka: pip install 'weirflow[kafka]'"
    ) from e

#: Upper bound on one blocking broker call (metadata, flush, transaction step), seconds.
DEFAULT_TIMEOUT_S = 30.0


class KafkaError(WeirflowError):
    """A Kafka broker call failed; ``retriable`` follows the broker's own verdict."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class KafkaDeliveryError(KafkaError):
    """A produced record was not acknowledged (the sink fails the task instead of losing it)."""


class KafkaFencedError(KafkaError):
    """A newer producer with the same ``transactional.id`` took over; this one is a zombie."""


def monotonic_ms() -> int:
    """The default injected clock of the connector: monotonic milliseconds (intervals only)."""
    return time.monotonic_ns() // 1_000_000


def split_id(topic: str, partition: int) -> str:
    """The split id of a partition: ``"<topic>/<partition>"``."""
    return f"{topic}/{partition}"


def parse_split(split: str) -> tuple[str, int]:
    """``"<topic>/<partition>"`` → ``(topic, partition)``.

    Raises:
        ConfigError: ``split`` is not of that form.
    """
    topic, _, part = split.rpartition("/")
    if not topic or not part.isdigit():
        raise ConfigError(f"not a Kafka split id: {split!r} (expected '<topic>/<partition>')")
    return topic, int(part)


def wrap_kafka_exception(e: Exception, what: str) -> KafkaError:
    """Turn a ``confluent_kafka.KafkaException`` into the matching :class:`KafkaError`.

    Args:
        e: the exception raised by a ``confluent_kafka`` call.
        what: what was being done, for the message (``"commit transaction of t.0"``).

    Returns:
        :class:`KafkaFencedError` for a fenced producer, else :class:`KafkaError`
        with ``retriable`` from the broker error (also true when it only asks for
        the transaction to be aborted: the sink writes it again in a new one).
    """
    err: Any = e.args[0] if e.args else None
    if isinstance(err, ck.KafkaError):
        code = err.code()
        if code in (ck.KafkaError._FENCED, ck.KafkaError.PRODUCER_FENCED):
            return KafkaFencedError(f"{what}: fenced by a newer instance ({err.str()})")
        # an error that only needs the transaction aborted is worth another (new) transaction
        retriable = err.retriable() or err.txn_requires_abort()
        return KafkaError(f"{what}: {err.name()}: {err.str()}", retriable=retriable)
    return KafkaError(f"{what}: {e}")
