"""The demo plot: the numbers it draws, and that it writes a readable PNG."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from weirflow.demos.flights.parse import scheduled_utc_ms
from weirflow.demos.flights.plot import daily_delayed_share, delay_by_local_hour, plot

H = 3_600_000


def record(key: str, start_ms: int, size_ms: int, value: dict[str, Any], firing: int = 0) -> dict:
    return {
        "key": key,
        "window_start_ms": start_ms,
        "window_end_ms": start_ms + size_ms,
        "firing": firing,
        "value": value,
    }


def hourly(departures: int, mean: float | None) -> dict[str, Any]:
    return {
        "departures": departures,
        "cancellations": 0,
        "mean_dep_delay_min": mean,
        "max_dep_delay_min": None if mean is None else int(mean),
        "delayed_15": 0,
    }


def three_hours(departures: int, delayed: int) -> dict[str, Any]:
    return {
        "departures": departures,
        "delayed_15": delayed,
        "delayed_share": delayed / departures if departures else None,
    }


def test_delay_by_local_hour_weights_by_departures_and_follows_dst() -> None:
    winter_8 = scheduled_utc_ms(2013, 1, 15, 800)  # 13:00Z
    summer_8 = scheduled_utc_ms(2013, 7, 15, 800)  # 12:00Z
    records = [
        record("UA", winter_8, H, hourly(1, 10.0)),
        record("UA", summer_8, H, hourly(3, 30.0)),
        record("UA", summer_8 + H, H, hourly(0, None)),
        record("B6", summer_8, H, hourly(2, 99.0)),
        record("B6", summer_8, H, hourly(2, 5.0), firing=1),  # the final value
    ]
    assert delay_by_local_hour(records) == {"UA": {8: (25.0, 4)}, "B6": {8: (5.0, 2)}}


def test_daily_share_uses_only_tiling_windows() -> None:
    day_start = scheduled_utc_ms(2013, 5, 1, 0)  # 04:00Z, not a multiple of 3 h
    aligned = day_start - day_start % (3 * H) + 3 * H  # 06:00Z = 02:00 local
    records = [
        record("JFK", aligned, 3 * H, three_hours(10, 2)),
        record("JFK", aligned + H, 3 * H, three_hours(50, 50)),  # overlaps: ignored
        record("JFK", aligned + 3 * H, 3 * H, three_hours(30, 6)),
        record("LGA", aligned + 24 * H, 3 * H, three_hours(4, 1)),
    ]
    assert daily_delayed_share(records) == {
        "JFK": {date(2013, 5, 1): 0.2},
        "LGA": {date(2013, 5, 2): 0.25},
    }


def test_plot_writes_a_png(tmp_path: Path) -> None:
    image = pytest.importorskip(
        "matplotlib.image", reason="matplotlib is not installed (pip install 'weirflow[demo]')"
    )
    start = scheduled_utc_ms(2013, 3, 1, 0)
    start -= start % (3 * H)
    carrier_hourly = [
        record(carrier, start + h * H, H, hourly(150, float(h % 24 + i)))
        for i, carrier in enumerate(["UA", "B6", "EV"])
        for h in range(24 * 10)
    ]
    origin_3h = [
        record(origin, start + h * H, 3 * H, three_hours(40, (h + i) % 40))
        for i, origin in enumerate(["EWR", "JFK", "LGA"])
        for h in range(24 * 10)
    ]
    path = tmp_path / "flights.png"
    plot(carrier_hourly, origin_3h, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert (width, height) == (1440, 1200)
    # Something was drawn: not a blank canvas.
    assert pixels.std() > 0.05
