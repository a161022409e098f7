"""``weirflow dlq list|show|replay``: dead letters in an event-log or Kafka topic, and their replay.

The topic is the one a :class:`~weirflow.connectors.DeadLetterEventLogSink`
(or, with ``--kafka BOOTSTRAP``, a :class:`~weirflow.connectors.DeadLetterKafkaSink`)
writes. ``replay`` appends the letters to the job's input topic exactly once
(see :mod:`weirflow.connectors.dead_letter_replay`): run it after the fix is
deployed; running it again replays nothing twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from weirflow.cli.app import app
from weirflow.cli.log import DEFAULT_LOG_DIR, LogDirOption, LogSettings, cli_errors, open_log
from weirflow.connectors.dead_letter_replay import (
    DeadLetterTopics,
    EventLogDeadLetters,
    parse_where,
)

dlq_app = typer.Typer(
    name="dlq",
    help="Dead letters in an event-log or Kafka topic: list, show, replay.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

TopicArgument = Annotated[str, typer.Argument(help="The dead-letter topic.")]
WhereOption = Annotated[
    list[str] | None,
    typer.Option(help="Only letters with NAME=VALUE (error_type, operator); repeatable."),
]


class DlqSettings(LogSettings):
    """Options of the ``dlq`` group: the log's, and the Kafka cluster when the topics are there."""

    def __init__(self, log_dir: Path, debug: bool, kafka: str | None) -> None:
        super().__init__(log_dir, debug)
        self.kafka = kafka


@dlq_app.callback()
def _dlq_group(
    ctx: typer.Context,
    log_dir: Annotated[
        Path, typer.Option("--log-dir", envvar="WEIRFLOW_LOG_DIR", help="Log directory.")
    ] = DEFAULT_LOG_DIR,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            envvar="WEIRFLOW_KAFKA_BOOTSTRAP",
            metavar="BOOTSTRAP",
            help="The topics are in this Kafka cluster (host:port[,...]), not the event log.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Dead letters in an event-log or Kafka topic: list, show, replay."""
    ctx.obj = DlqSettings(log_dir, debug, kafka)


@contextmanager
def _topics(ctx: typer.Context, log_dir: Path | None) -> Iterator[DeadLetterTopics]:
    """The dead-letter topics of the group's Kafka cluster, else of the event log."""
    settings = ctx.find_object(DlqSettings)
    if settings is not None and settings.kafka is not None:
        # imported here: the event log must not need the kafka extra
        from weirflow.connectors.kafka.dead_letter_replay import KafkaDeadLetters

        yield KafkaDeadLetters(settings.kafka)
        return
    with open_log(ctx, log_dir) as log:
        yield EventLogDeadLetters(log)


@dlq_app.command("list")
@cli_errors
def list_letters(ctx: typer.Context, topic: TopicArgument, log_dir: LogDirOption = None) -> None:
    """Count the dead letters by operator and error type, and how many were replayed."""
    with _topics(ctx, log_dir) as topics:
        done = topics.replayed_ids(topic)
        counts: Counter[tuple[str, str]] = Counter()
        replayed: Counter[tuple[str, str]] = Counter()
        for letter in topics.letters(topic):
            counts[(letter.operator, letter.error_type)] += 1
            replayed[(letter.operator, letter.error_type)] += letter.letter_id in done
    table = Table(title=f"dead letters in {topic}", show_edge=False)
    for col in ("operator", "error type", "letters", "replayed"):
        table.add_column(col, justify="right" if col in ("letters", "replayed") else "left")
    for (operator, error_type), n in sorted(counts.items()):
        table.add_row(
            escape(operator), escape(error_type), str(n), str(replayed[(operator, error_type)])
        )
    out.print(table)


@dlq_app.command("show")
@cli_errors
def show(
    ctx: typer.Context,
    topic: TopicArgument,
    where: WhereOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 20,
    log_dir: LogDirOption = None,
) -> None:
    """Print dead letters: where, why, attempts, where they came from, and their value."""
    filters = parse_where(where or [])
    with _topics(ctx, log_dir) as topics:
        done = topics.replayed_ids(topic)
        shown = 0
        for letter in topics.letters(topic):
            if not letter.matches(filters):
                continue
            origin = (
                f"{letter.original.topic}/{letter.original.partition}/{letter.original.offset}"
                if letter.original is not None
                else "-"
            )
            state = "replayed" if letter.letter_id in done else "pending"
            out.print(
                f"{escape(letter.letter_id)}  {escape(letter.operator)}  "
                f"{escape(letter.error_type)}  attempts {letter.attempts}  from {escape(origin)}  "
                f"{state}\n  {escape(letter.message)}\n  {escape(repr(letter.value)[:200])}"
            )
            shown += 1
            if shown >= limit:
                break


@dlq_app.command("replay")
@cli_errors
def replay(
    ctx: typer.Context,
    topic: TopicArgument,
    into: Annotated[str, typer.Option(help="The job's input topic to append the letters to.")],
    where: WhereOption = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be replayed; write nothing.")] = (
        False
    ),
    log_dir: LogDirOption = None,
) -> None:
    """Append the dead letters not replayed yet to INTO, exactly once."""
    filters = parse_where(where or [])
    with _topics(ctx, log_dir) as topics:
        report = topics.replay(topic, into, filters, dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    for letter in report.replayed if dry_run else []:
        out.print(f"{escape(letter.letter_id)}  {escape(letter.error_type)}")
    err.print(
        f"{verb} {len(report.replayed)} dead letter(s) of {escape(topic)} into {escape(into)} "
        f"({report.already_replayed} replayed before, {report.not_matching} not matching)"
    )
