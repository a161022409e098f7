"""Dead letters to Kafka: a sink that writes ``DeadLetter`` records with descriptive headers."""

from __future__ import annotations

from weirflow.connectors.dead_letters import TRACEBACK, dead_letter_headers, own_headers
from weirflow.connectors.kafka.sink import Guarantee, KafkaSink, KafkaSinkOptions, encode_default
from weirflow.records import DeadLetter


class DeadLetterKafkaSink(KafkaSink):
    """A :class:`KafkaSink` for ``dead_letters()`` streams.

    The Kafka value is the original record (bytes as is, ``str`` as UTF-8,
    else JSON, ``repr`` for what JSON cannot hold); the headers are the
    record's own (those a job with tracing passed along, its ``traceparent``
    included), then :func:`dead_letter_headers` and ``weirflow.traceback``. Arguments as
    :class:`KafkaSink` (no ``key``/``encode``/``headers``: records are
    unkeyed, and the rest is fixed).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        guarantee: Guarantee = "exactly_once",
        options: KafkaSinkOptions | None = None,
    ) -> None:
        opts = options or KafkaSinkOptions()
        opts = KafkaSinkOptions(
            transactional_id_prefix=opts.transactional_id_prefix,
            headers=_letter_headers,
            timeout=opts.timeout,
            client_config=opts.client_config,
        )
        super().__init__(
            bootstrap_servers, topic, encode=_letter_value, guarantee=guarantee, options=opts
        )


def _letter_value(letter: DeadLetter) -> bytes:
    return encode_default(letter.value)


def _letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        *own_headers(letter.headers),
        *dead_letter_headers(letter),
        (TRACEBACK, letter.traceback.encode()),
    ]
