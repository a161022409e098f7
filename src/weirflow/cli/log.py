"""``weirflow log ...``: create, produce, consume, describe and show lag on an event log.

Errors print one line on stderr and exit with status 1; ``weirflow log
--debug ...`` shows the traceback instead. Record data goes to stdout,
everything else (progress, summaries) to stderr, so that output pipes cleanly;
a reader that stops early (``| head``) ends ``consume`` quietly. Commands
that only read (``describe``, ``consume``, ``lag``) and ``produce`` refuse a
``--log-dir`` that holds no log rather than create an empty one there.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, BinaryIO, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from weirflow.cli.app import app
from weirflow.errors import WeirflowError
from weirflow.eventlog import (
    ConsumedRecord,
    EventLog,
    InvalidArgumentError,
    Record,
    system_clock_ms,
)

DEFAULT_LOG_DIR = Path("weirflow-data/log")
_BATCH = 1_000
_P = ParamSpec("_P")
_R = TypeVar("_R")

log_app = typer.Typer(
    name="log",
    help="The embedded event log: topics, records, consumer groups.",
    no_args_is_help=True,
)
app.add_typer(log_app, name="log")

LogDirOption = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        help="Log directory [default: ./weirflow-data/log, or $WEIRFLOW_LOG_DIR].",
        show_default=False,
    ),
]


class LogSettings:
    """Options of the ``log`` group (and ``dlq``), shared with its commands through the click
    context."""

    def __init__(self, log_dir: Path, debug: bool) -> None:
        self.log_dir = log_dir
        self.debug = debug


@log_app.callback()
def _log_group(
    ctx: typer.Context,
    log_dir: Annotated[
        Path,
        typer.Option("--log-dir", envvar="WEIRFLOW_LOG_DIR", help="Log directory."),
    ] = DEFAULT_LOG_DIR,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """The embedded event log: topics, records, consumer groups."""
    ctx.obj = LogSettings(log_dir, debug)


def _settings(ctx: typer.Context) -> LogSettings:
    obj = ctx.find_object(LogSettings)
    return obj if obj is not None else LogSettings(DEFAULT_LOG_DIR, False)


def cli_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn weirflow and I/O errors into one line on stderr and exit status 1 (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        # typer may hand over its own vendored click Context class, so look for
        # the shared settings by behaviour rather than by type.
        ctx = kwargs.get("ctx")
        debug = hasattr(ctx, "find_object") and _settings(ctx).debug  # type: ignore[arg-type]
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # The reader of stdout stopped early (`| head`): that ends the output, not an
            # error. Point stdout at /dev/null so the exit flush does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (WeirflowError, OSError) as e:
            if debug:
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def open_log(ctx: typer.Context, log_dir: Path | None, *, create: bool = False) -> EventLog:
    """Open the command's log: ``log_dir``, else the group's ``--log-dir``.

    Args:
        ctx: the command's context (holds the group's settings).
        log_dir: the command's own ``--log-dir``, or ``None``.
        create: create the log when missing (``create``, ``quickstart``); else a
            path without a log raises ``LogNotFoundError``.

    Returns:
        The open :class:`~weirflow.eventlog.EventLog`.
    """
    return EventLog(log_dir if log_dir is not None else _settings(ctx).log_dir, create=create)


class ValueFormat(StrEnum):
    """How a record value is written as one line of text.

    ``text``: UTF-8 text (``produce`` refuses other bytes); ``raw``: the bytes
    as they are, which cannot hold a newline; ``base64`` and ``hex``: the value
    encoded, for any bytes. ``consume`` writes ``text`` and ``raw`` alike: the
    stored bytes.
    """

    text = "text"
    raw = "raw"
    base64 = "base64"
    hex = "hex"


ValueFormatOption = Annotated[
    ValueFormat,
    typer.Option("--value-format", help="Values as text (UTF-8), raw bytes, base64 or hex."),
]


def _decode_value(line: bytes, lineno: int, fmt: ValueFormat) -> bytes:
    """Return the value that one input line (without its newline) stands for."""
    if fmt is ValueFormat.raw:
        return line
    line = line.removesuffix(b"\r")
    try:
        if fmt is ValueFormat.base64:
            return base64.b64decode(line, validate=True)
        if fmt is ValueFormat.hex:
            return bytes.fromhex(line.decode("ascii"))
        line.decode("utf-8")
        return line
    except UnicodeDecodeError as e:
        if fmt is ValueFormat.hex:
            raise InvalidArgumentError(f"line {lineno}: not hex (byte {e.start})") from e
        raise InvalidArgumentError(
            f"line {lineno}: not UTF-8 text (byte {e.start}); pass --value-format raw to store "
            "the bytes as they are, or base64/hex for encoded values"
        ) from e
    except (binascii.Error, ValueError) as e:
        raise InvalidArgumentError(f"line {lineno}: not {fmt.value} ({e})") from e


def _encode_value(value: bytes, fmt: ValueFormat) -> bytes:
    if fmt is ValueFormat.base64:
        return base64.b64encode(value)
    if fmt is ValueFormat.hex:
        return value.hex().encode("ascii")
    return value


def _interactive() -> bool:
    return sys.stderr.isatty()


@log_app.command()
@cli_errors
def create(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name.")],
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="Partition count.")] = 1,
    retention_ms: Annotated[
        int | None, typer.Option(help="Keep records this many ms after their append.")
    ] = None,
    retention_bytes: Annotated[
        int | None, typer.Option(help="Keep at most this many bytes per partition.")
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed if the topic exists.")] = False,
    log_dir: LogDirOption = None,
) -> None:
    """Create a topic."""
    with open_log(ctx, log_dir, create=True) as log:
        log.create_topic(topic, partitions, retention_ms, retention_bytes, exist_ok=exist_ok)
    typer.echo(f"created topic {topic!r} with {partitions} partition(s)", err=True)


def _line_record(
    value: bytes, lineno: int, key_field: str | None, ts_field: str | None, partition: int | None
) -> Record:
    """Build the record of one input line's value (key and time come from the value's JSON)."""
    key: bytes | None = None
    ts = system_clock_ms()
    if key_field is not None or ts_field is not None:
        try:
            obj = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidArgumentError(f"line {lineno}: not JSON ({e})") from e
        if not isinstance(obj, dict):
            raise InvalidArgumentError(f"line {lineno}: not a JSON object")
        if key_field is not None:
            if key_field not in obj:
                raise InvalidArgumentError(f"line {lineno}: no key field {key_field!r}")
            raw = obj[key_field]
            key = (raw if isinstance(raw, str) else json.dumps(raw)).encode()
        if ts_field is not None:
            raw = obj.get(ts_field)
            if type(raw) is not int:
                raise InvalidArgumentError(
                    f"line {lineno}: timestamp field {ts_field!r} must be an int (ms), got {raw!r}"
                )
            ts = raw
    return Record(value, key=key, timestamp_ms=ts, partition=partition)


@log_app.command()
@cli_errors
def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name.")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Input file [default: stdin].")
    ] = None,
    key_field: Annotated[str | None, typer.Option(help="JSON field holding the key.")] = None,
    timestamp_field: Annotated[
        str | None, typer.Option(help="JSON field holding the event time (int ms).")
    ] = None,
    partition: Annotated[int | None, typer.Option(help="Write every record here.")] = None,
    value_format: ValueFormatOption = ValueFormat.text,
    log_dir: LogDirOption = None,
) -> None:
    """Append one record per input line; the line without its newline is the value
    (decoded per --value-format)."""
    with open_log(ctx, log_dir) as log:
        log.partition_count(topic)
        stream: BinaryIO = file.open("rb") if file is not None else sys.stdin.buffer
        total = file.stat().st_size if file is not None else None
        count = 0
        with stream, Progress(console=Console(stderr=True), disable=not _interactive()) as bar:
            task = bar.add_task(f"producing to {topic}", total=total)
            batch: list[Record] = []
            for lineno, line in enumerate(stream, 1):
                try:
                    value = _decode_value(line.removesuffix(b"\n"), lineno, value_format)
                    record = _line_record(value, lineno, key_field, timestamp_field, partition)
                except InvalidArgumentError as e:
                    raise InvalidArgumentError(
                        f"{e}; the {count} record(s) before line {count + 1} are already "
                        f"appended to {topic!r}: fix the line and produce from line {count + 1}"
                    ) from e
                batch.append(record)
                bar.advance(task, len(line))
                if len(batch) >= _BATCH:
                    count += len(log.append(topic, batch))
                    batch = []
            count += len(log.append(topic, batch))
    typer.echo(f"produced {count} record(s) to {topic!r}", err=True)


def _text_or_b64(data: bytes | None) -> str | dict[str, str] | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _jsonl(r: ConsumedRecord) -> str:
    return json.dumps(
        {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "key": _text_or_b64(r.key),
            "value": _text_or_b64(r.value),
            "timestamp_ms": r.timestamp_ms,
            "headers": [[n, _text_or_b64(v)] for n, v in r.headers],
        },
        ensure_ascii=False,
    )


def _start_positions(
    log: EventLog,
    topic: str,
    parts: list[int],
    from_beginning: bool,
    offset: int | None,
    group: str | None,
    isolation: Literal["read_committed", "read_uncommitted"],
) -> dict[int, int]:
    out = {}
    for p in parts:
        start = log.start_offset(topic, p)
        if offset is not None:
            log.read(topic, p, offset, max_records=1, isolation=isolation)
            out[p] = offset
        elif from_beginning or group is None:
            out[p] = start
        else:
            committed = log.committed_offset(group, topic, p)
            out[p] = start if committed is None else max(committed, start)
    return out


def _poll(
    log: EventLog,
    topic: str,
    positions: dict[int, int],
    isolation: Literal["read_committed", "read_uncommitted"],
    budget: int | None,
) -> Iterator[list[ConsumedRecord]]:
    """Yield batches from every partition until each is at its end or the budget is spent."""
    for p in positions:
        while budget is None or budget > 0:
            limit = _BATCH if budget is None else min(_BATCH, budget)
            if positions[p] >= log.end_offset(topic, p, isolation):
                break
            batch = log.read(topic, p, positions[p], limit, isolation=isolation)
            positions[p] = batch[-1].offset + 1
            if budget is not None:
                budget -= len(batch)
            yield batch


@log_app.command()
@cli_errors
def consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name.")],
    partition: Annotated[int | None, typer.Option(help="Only this partition.")] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the start offset.")
    ] = False,
    offset: Annotated[int | None, typer.Option(help="Start at this offset.")] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group: start at its position and commit as you go."),
    ] = None,
    isolation: Annotated[
        str, typer.Option(help="read_committed or read_uncommitted.")
    ] = "read_committed",
    max_records: Annotated[int | None, typer.Option("--max", help="Stop after N records.")] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="values (one value a line) or jsonl.")
    ] = "values",
    value_format: ValueFormatOption = ValueFormat.text,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new records.")] = False,
    poll_ms: Annotated[int, typer.Option(help="Wait between polls with --follow.")] = 200,
    log_dir: LogDirOption = None,
) -> None:
    """Print records from the start position (--offset, --from-beginning, the group's
    position, else the start) to the current end, or forever with --follow."""
    if output_format not in ("values", "jsonl"):
        raise InvalidArgumentError(f"--format must be values or jsonl, got {output_format!r}")
    if isolation not in ("read_committed", "read_uncommitted"):
        raise InvalidArgumentError(
            f"--isolation must be read_committed or read_uncommitted, got {isolation!r}"
        )
    if from_beginning and offset is not None:
        raise InvalidArgumentError("give --from-beginning or --offset, not both")
    iso: Literal["read_committed", "read_uncommitted"] = (
        "read_committed" if isolation == "read_committed" else "read_uncommitted"
    )
    with open_log(ctx, log_dir) as log:
        if partition is not None:
            log.start_offset(topic, partition)
        parts = list(range(log.partition_count(topic))) if partition is None else [partition]
        positions = _start_positions(log, topic, parts, from_beginning, offset, group, iso)
        remaining = max_records
        pending = sum(log.end_offset(topic, p, iso) - positions[p] for p in parts)
        show = _interactive() and not follow
        with Progress(console=Console(stderr=True), disable=not show) as bar:
            task = bar.add_task(f"consuming {topic}", total=pending)
            while True:
                for batch in _poll(log, topic, positions, iso, remaining):
                    for r in batch:
                        if output_format == "values":
                            typer.echo(_encode_value(r.value or b"", value_format))
                        else:
                            typer.echo(_jsonl(r))
                    bar.advance(task, len(batch))
                    if remaining is not None:
                        remaining -= len(batch)
                    if group is not None:
                        # Provisional read_uncommitted offsets must never become positions.
                        end = log.end_offset(topic, batch[0].partition)
                        pos = min(positions[batch[0].partition], end)
                        log.commit_offsets(group, {(topic, batch[0].partition): pos})
                if not follow or remaining == 0:
                    break
                time.sleep(poll_ms / 1000)


def describe_table(log: EventLog, topic: str) -> Table:
    """Return a table of ``topic``'s partitions: start and end offset, records, bytes.

    Raises:
        UnknownTopicError: no such topic.
    """
    d = log.describe(topic)
    retention = ", ".join(
        f"{name}={value}"
        for name, value in (
            ("retention_ms", d.retention_ms),
            ("retention_bytes", d.retention_bytes),
        )
        if value is not None
    )
    table = Table(title=f"{topic}" + (f" ({retention})" if retention else ""))
    for col in ("partition", "start offset", "end offset", "records", "bytes"):
        table.add_column(col, justify="right")
    for p in d.partitions:
        table.add_row(
            *map(str, (p.partition, p.start_offset, p.end_offset)),
            f"{p.record_count:,}",
            f"{p.bytes:,}",
        )
    return table


@log_app.command()
@cli_errors
def describe(
    ctx: typer.Context,
    topic: Annotated[str | None, typer.Argument(help="Topic name [default: all].")] = None,
    log_dir: LogDirOption = None,
) -> None:
    """Show topics with start offset, end offset, record count and bytes per partition."""
    console = Console()
    with open_log(ctx, log_dir) as log:
        topics = [topic] if topic is not None else log.list_topics()
        if not topics:
            typer.echo("no topics", err=True)
        for name in topics:
            console.print(describe_table(log, name))


def lag_table(log: EventLog, group: str) -> Table | None:
    """Return a table of ``group``'s position, end offset and lag per partition, or ``None``
    when the group has committed no positions."""
    rows = log.lag(group)
    if not rows:
        return None
    table = Table(title=f"consumer group {group}")
    for col in ("topic", "partition", "committed", "end offset", "lag"):
        table.add_column(col, justify="left" if col == "topic" else "right")
    for topic, p, committed, end, lag in rows:
        table.add_row(
            topic, str(p), "-" if committed is None else str(committed), str(end), f"{lag:,}"
        )
    return table


@log_app.command()
@cli_errors
def lag(
    ctx: typer.Context,
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group.")],
    log_dir: LogDirOption = None,
) -> None:
    """Show a consumer group's committed position, end offset and lag per partition."""
    with open_log(ctx, log_dir) as log:
        table = lag_table(log, group)
    if table is None:
        raise InvalidArgumentError(f"consumer group {group!r} has no committed positions")
    Console().print(table)
