"""The demo's picture: two panels drawn from the job's ``carrier_hourly`` and ``origin_3h`` output.

Top: mean departure delay by hour of day (New York local time) per
carrier, over the whole year. Bottom: daily share of departures delayed more
than 15 minutes per airport, each day thin and a centred 7-day mean thick.

Both panels are computed from window records alone, so the plot shows what
the streaming job committed. Input records have the committed shape
``{"key", "window_start_ms", "window_end_ms", "value", "firing"?}``; when a
window fired more than once, its highest firing is used.

The daily share uses the ``origin_3h`` windows whose start is a multiple of
3 h: with a 1 h slide those windows tile time exactly, so every departure is
counted once; a window belongs to the New York date of its start.

matplotlib is used through its object API with the Agg canvas, so nothing
global (backend, pyplot state) is touched.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from weirflow.demos.flights.aggregates import ORIGIN_3H_SIZE
from weirflow.demos.flights.data import INSTALL_HINT, DemoExtraMissingError
from weirflow.demos.flights.parse import NEW_YORK

_ROLLING_DAYS: Final = 7
_DPI: Final = 120
_MIN_DEPARTURES_PER_HOUR: Final = 100


def _final_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    latest: dict[tuple[Any, int, int], Mapping[str, Any]] = {}
    for record in records:
        window = (record["key"], record["window_start_ms"], record["window_end_ms"])
        held = latest.get(window)
        if held is None or record.get("firing", 0) > held.get("firing", 0):
            latest[window] = record
    return list(latest.values())


def _local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).astimezone(NEW_YORK)


def delay_by_local_hour(
    carrier_hourly: Sequence[Mapping[str, Any]],
) -> dict[str, dict[int, tuple[float, int]]]:
    """Mean departure delay per carrier and New York hour of day, weighted by departures.

    Args:
        carrier_hourly: committed ``carrier_hourly`` records.

    Returns:
        ``{carrier: {hour 0-23: (mean delay in minutes, departures)}}``
        over all days; hours without departures are absent.
    """
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    for record in _final_records(carrier_hourly):
        value = record["value"]
        if not value["departures"]:
            continue
        cell = sums[record["key"]][_local(record["window_start_ms"]).hour]
        cell[0] += value["mean_dep_delay_min"] * value["departures"]
        cell[1] += value["departures"]
    return {
        carrier: {hour: (total / n, int(n)) for hour, (total, n) in sorted(hours.items())}
        for carrier, hours in sums.items()
    }


def daily_delayed_share(
    origin_3h: Sequence[Mapping[str, Any]],
) -> dict[str, dict[date, float]]:
    """Daily share of departures delayed more than 15 minutes, per airport.

    Args:
        origin_3h: committed ``origin_3h`` records.

    Returns:
        ``{origin: {New York date: share in [0, 1]}}`` from the windows that
        tile time (start a multiple of the window size); days without
        departures are absent.
    """
    size_ms = ORIGIN_3H_SIZE // timedelta(milliseconds=1)
    counts: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for record in _final_records(origin_3h):
        if record["window_start_ms"] % size_ms:
            continue
        value = record["value"]
        cell = counts[record["key"]][_local(record["window_start_ms"]).date()]
        cell[0] += value["delayed_15"]
        cell[1] += value["departures"]
    return {
        origin: {day: delayed / n for day, (delayed, n) in sorted(days.items()) if n}
        for origin, days in counts.items()
    }


def _rolling_mean(values: list[float], width: int) -> list[float]:
    half = width // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half) : i + half + 1]
        out.append(sum(part) / len(part))
    return out


def plot(
    carrier_hourly: Sequence[Mapping[str, Any]],
    origin_3h: Sequence[Mapping[str, Any]],
    path: str | Path,
) -> None:
    """Write the demo's two-panel PNG.

    Args:
        carrier_hourly: committed ``carrier_hourly`` records.
        origin_3h: committed ``origin_3h`` records.
        path: where to write the PNG (overwritten if present).

    Raises:
        DemoExtraMissingError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise DemoExtraMissingError(
            f"plotting needs matplotlib; install it with: {INSTALL_HINT}"
        ) from e

    by_hour = delay_by_local_hour(carrier_hourly)
    by_day = daily_delayed_share(origin_3h)

    fig = Figure(figsize=(12, 10), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1)

    # An hour with few departures in the whole year holds only flights that
    # left hours late (after midnight, say); its mean says nothing typical.
    shown = {
        carrier: {h: mean for h, (mean, n) in hours.items() if n >= _MIN_DEPARTURES_PER_HOUR}
        for carrier, hours in by_hour.items()
    }
    ranked = sorted(
        (c for c in shown if shown[c]), key=lambda c: -sum(n for _, n in by_hour[c].values())
    )
    for color, carrier in zip(_palette(len(ranked)), ranked, strict=True):
        # NaN where an hour is left out, so the line breaks instead of
        # bridging the gap.
        ys = [shown[carrier].get(hour, math.nan) for hour in range(24)]
        top.plot(range(24), ys, marker=".", color=color, label=carrier)
    top.axhline(0, color="grey", linewidth=0.8)
    top.set_xlim(-0.5, 23.5)
    top.set_xticks(range(24))
    top.set_xlabel("hour of actual departure (New York local time)")
    top.set_ylabel("mean departure delay (minutes)")
    top.set_title(
        "Mean departure delay by hour of day, per carrier (2013; hours with fewer than "
        f"{_MIN_DEPARTURES_PER_HOUR} departures in the year left out)"
    )
    top.grid(alpha=0.3)
    top.legend(title="carrier, busiest first", ncols=4, fontsize="small", loc="upper center")

    for origin in sorted(by_day):
        days = by_day[origin]
        xs, ys = list(days), [100 * share for share in days.values()]
        (line,) = bottom.plot(xs, ys, linewidth=0.6, alpha=0.35)
        bottom.plot(
            xs,
            _rolling_mean(ys, _ROLLING_DAYS),
            linewidth=2,
            color=line.get_color(),
            label=f"{origin} ({_ROLLING_DAYS}-day mean)",
        )
    bottom.set_ylabel("departures delayed > 15 min (%)")
    bottom.set_title("Daily share of delayed departures, per New York airport")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left")

    fig.savefig(path, format="png")


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
