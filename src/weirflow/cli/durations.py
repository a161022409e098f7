"""Parsing durations given on the command line (``500ms``, ``1s``, ``2m``, ``1h``)."""

from __future__ import annotations

import re
from datetime import timedelta

import typer

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|m|h)\s*")


def parse_duration(text: str) -> timedelta:
    """Parse ``<int><unit>`` with unit ``ms``, ``s``, ``m`` or ``h``.

    Raises:
        typer.BadParameter: any other text (the message shows the accepted forms).
    """
    m = _DURATION.fullmatch(text)
    if m is None:
        raise typer.BadParameter(f"{text!r} is not a duration; use e.g. 500ms, 1s, 2m, 1h")
    return timedelta(milliseconds=int(m.group(1)) * _UNITS[m.group(2)])
