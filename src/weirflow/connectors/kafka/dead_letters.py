"""Dead letters to Kafka: a sink that writes ``DeadLetter`` records with descriptive headers."""

from __future__ import annotations

from weirflow.connectors.kafka.sink import Guarantee, KafkaSink, KafkaSinkOptions, encode_default
from weirflow.records import DeadLetter, LogPosition


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Kafka headers describing a :class:`~weirflow.records.DeadLetter`.

    ``weirflow.error.type``, ``weirflow.error.message``, ``weirflow.attempts``,
    ``weirflow.operator``, ``weirflow.subtask``, ``weirflow.timestamp_ms``
    (when known) and, when the letter's ``position`` is a
    :class:`~weirflow.records.LogPosition` (a record a source could not
    decode), ``weirflow.original.topic``, ``.partition`` and ``.offset``.
    """
    h = [
        ("weirflow.error.type", letter.error_type.encode()),
        ("weirflow.error.message", letter.message.encode()),
        ("weirflow.attempts", str(letter.attempts).encode()),
        ("weirflow.operator", letter.operator.encode()),
        ("weirflow.subtask", str(letter.subtask).encode()),
    ]
    if letter.timestamp_ms is not None:
        h.append(("weirflow.timestamp_ms", str(letter.timestamp_ms).encode()))
    pos = letter.position
    if isinstance(pos, LogPosition):
        h += [
            ("weirflow.original.topic", pos.topic.encode()),
            ("weirflow.original.partition", str(pos.partition).encode()),
            ("weirflow.original.offset", str(pos.offset).encode()),
        ]
    return h


class DeadLetterKafkaSink(KafkaSink):
    """A :class:`KafkaSink` for ``dead_letters()`` streams.

    The Kafka value is the original record (bytes as is, ``str`` as UTF-8,
    else JSON, ``repr`` for what JSON cannot hold); the headers come from
    :func:`dead_letter_headers`, plus ``weirflow.traceback``. Arguments as
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
    return [*dead_letter_headers(letter), ("weirflow.traceback", letter.traceback.encode())]
