"""The live one-line progress display and structured (JSON) logs.

The progress line shows, from the latest
:class:`~weirflow.metrics.model.JobStatus`: events/s in and out, the
watermark, the source lag, the last checkpoint and its age, restarts and dead
letters. It is drawn with ``rich`` on a terminal and stays silent otherwise
(pipes, CI logs). With JSON logs, the same figures go out as a ``progress``
log record instead.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from weirflow.metrics.model import JobStatus

log = logging.getLogger("weirflow.progress")


def _rate(per_s: float) -> str:
    if per_s >= 1_000_000:
        return f"{per_s / 1_000_000:.1f}M/s"
    if per_s >= 1_000:
        return f"{per_s / 1_000:.1f}k/s"
    return f"{per_s:.0f}/s"


def _watermark(ms: int | None) -> str:
    if ms is None:
        return "-"
    # Small event times (synthetic data, tests) read better as plain ms than as 1970 dates.
    if abs(ms) < 10**11:
        return f"{ms} ms"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def progress_fields(status: JobStatus, now_ms: int) -> dict[str, Any]:
    """Return the progress figures as plain data.

    Args:
        status: the latest sample.
        now_ms: processing time now (ms since the epoch), for the checkpoint's age.

    Returns:
        ``job``, ``in_per_s``, ``out_per_s``, ``watermark_ms``, ``lag_records``,
        ``last_checkpoint``, ``checkpoint_age_ms``, ``restarts``, ``dead_letters``.
    """
    age = now_ms - status.last_checkpoint_ms if status.last_checkpoint_ms is not None else None
    return {
        "job": status.job,
        "in_per_s": round(status.records_in_rate, 1),
        "out_per_s": round(status.records_out_rate, 1),
        "watermark_ms": status.watermark_ms,
        "lag_records": status.total_split_lag,
        "last_checkpoint": status.last_checkpoint_id,
        "checkpoint_age_ms": age,
        "restarts": status.restarts,
        "dead_letters": status.dead_letters,
    }


def progress_text(status: JobStatus, now_ms: int) -> str:
    """Return the one-line progress for ``status``.

    Args:
        status: the latest sample.
        now_ms: processing time now (ms since the epoch).
    """
    f = progress_fields(status, now_ms)
    age_ms = f["checkpoint_age_ms"]
    chk = f"#{f['last_checkpoint']} {age_ms / 1000:.1f}s ago" if age_ms is not None else "none"

    return (
        f"{status.job}  in {_rate(f['in_per_s'])}  out {_rate(f['out_per_s'])}  "
        f"watermark {_watermark(f['watermark_ms'])}  lag {f['lag_records']}  "
        f"checkpoint {chk}  restarts {f['restarts']}  dead letters {f['dead_letters']}"
    )


class ProgressReporter:
    """Refreshes the progress line (terminal) or logs ``progress`` records (JSON) on a thread.

    Args:
        status: returns the latest sample.
        clock: processing time in ms since the epoch.
        mode: ``"live"`` draws on ``console`` when it is a terminal, else
            stays quiet; ``"json"`` logs a ``progress`` record per period.
        period: time between refreshes.
        console: where the live line goes (stderr by default).
    """

    def __init__(
        self,
        status: Callable[[], JobStatus],
        clock: Callable[[], int],
        mode: str = "live",
        period: timedelta = timedelta(seconds=1),
        console: Console | None = None,
    ) -> None:
        self.status = status
        self.clock = clock
        self.mode = mode
        self.period = period
        self.console = console or Console(stderr=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether anything will be shown (JSON mode, or a terminal in live mode)."""
        return self.mode == "json" or self.console.is_terminal

    def start(self) -> None:
        """Start refreshing; does nothing when not :attr:`active`."""
        if not self.active:
            return
        target = self._run_json if self.mode == "json" else self._run_live
        self._thread = threading.Thread(target=target, daemon=True, name="weirflow-progress")
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and wait for the thread (bounded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run_live(self) -> None:
        original = sys.stderr
        with Live(Text(""), console=self.console, auto_refresh=False, transient=True) as live:
            # Log handlers hold the real stderr; point them at Live's proxy while the line
            # is drawn, so that log lines go above it instead of through it.
            moved = [
                h
                for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is original
            ]
            for h in moved:
                h.setStream(sys.stderr)
            try:
                self._refresh(live)
            finally:
                for h in moved:
                    h.setStream(original)

    def _refresh(self, live: Live) -> None:
        while not self._stop.wait(self.period.total_seconds()):
            line = Text(progress_text(self.status(), self.clock()), no_wrap=True)
            line.overflow = "ellipsis"  # one line, also on a narrow terminal
            live.update(line, refresh=True)

    def _run_json(self) -> None:
        while not self._stop.wait(self.period.total_seconds()):
            log.info("progress", extra={"fields": progress_fields(self.status(), self.clock())})


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, the record's ``fields`` (if any), and ``exception`` text."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
