"""The progress line and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import timedelta

from rich.console import Console

from weirflow.metrics import (
    JobStatus,
    JsonFormatter,
    ProgressReporter,
    progress_fields,
    progress_text,
)

STATUS = JobStatus(
    job="demo",
    sampled_ms=10_000,
    split_lag={"src/t/0": 40, "src/t/1": 2},
    restarts=2,
    records_in_rate=12_345.0,
    records_out_rate=99.0,
    dead_letters=3,
    watermark_ms=4_200,
    last_checkpoint_id=17,
    last_checkpoint_ms=8_500,
)


def test_progress_fields_and_text() -> None:
    f = progress_fields(STATUS, 10_000)
    assert f == {
        "job": "demo",
        "in_per_s": 12_345.0,
        "out_per_s": 99.0,
        "watermark_ms": 4_200,
        "lag_records": 42,
        "last_checkpoint": 17,
        "checkpoint_age_ms": 1_500,
        "restarts": 2,
        "dead_letters": 3,
    }
    line = progress_text(STATUS, 10_000)
    for part in (
        "in 12.3k/s",
        "out 99/s",
        "watermark 4200 ms",
        "lag 42",
        "#17 1.5s ago",
        "restarts 2",
        "dead letters 3",
    ):
        assert part in line


def test_no_checkpoint_yet_and_epoch_watermarks() -> None:
    status = JobStatus(job="j", sampled_ms=0, watermark_ms=1_767_225_600_000)
    line = progress_text(status, 0)
    assert "checkpoint none" in line
    assert "watermark 2026-01-01 00:00:00" in line


def test_live_mode_is_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(lambda: STATUS, lambda: 10_000, "live", console=Console(file=out))
    assert not reporter.active
    reporter.start()
    reporter.stop()
    assert out.getvalue() == ""


def test_json_mode_logs_progress_records() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("weirflow.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        reporter = ProgressReporter(
            lambda: STATUS, lambda: 10_000, "json", period=timedelta(milliseconds=20)
        )
        assert reporter.active
        reporter.start()
        while stream.getvalue().count("\n") < 2:
            reporter._stop.wait(0.01)
        reporter.stop()
    finally:
        logger.removeHandler(handler)
    first = json.loads(stream.getvalue().splitlines()[0])
    assert first["message"] == "progress"
    assert first["level"] == "info"
    assert first["lag_records"] == 42
    assert first["last_checkpoint"] == 17


def test_json_formatter_carries_exceptions() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.getLogger("x").makeRecord(
        "x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info
    )
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed here"
    assert out["level"] == "error"
    assert "ValueError: bad" in out["exception"]


def test_live_mode_draws_the_line_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    reporter = ProgressReporter(
        lambda: STATUS, lambda: 10_000, "live", period=timedelta(milliseconds=10), console=console
    )
    assert reporter.active
    reporter.start()
    while "dead letters 3" not in out.getvalue():
        reporter._stop.wait(0.01)
    reporter.stop()
    assert "in 12.3k/s" in out.getvalue()
