"""One table from the JSON results of ``windowed_count.py``, ``nexmark/run.py`` and ``scaling.py``.

Rows: every windowed_count system (events/s, ratio to the plain loop, peak
RSS, latency p50/p99 at the input rate it was measured at) and every Nexmark
query (events/s per core, ratio to Flink's published per-core figure, peak
RSS) and every scaling run (events/s from process start to exit, the ratio
of 2 workers to 1, and one cross-process channel's records/s). A missing
file is skipped with a note.

Usage: python benchmarks/peers/summary.py --windowed-count PATH --nexmark PATH [--scaling PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _load(path: Path | None, console: Console) -> dict[str, Any] | None:
    if path is None:
        return None
    if not path.exists():
        console.print(f"[yellow]no results at {path}; skipped[/yellow]")
        return None
    return json.loads(path.read_text())


def build_table(
    wc: dict[str, Any] | None, nx: dict[str, Any] | None, sc: dict[str, Any] | None = None
) -> Table:
    """The combined table.

    Args:
        wc: ``windowed_count.py --json`` output, or ``None``.
        nx: ``nexmark/run.py --json`` output, or ``None``.
        sc: ``scaling.py --json`` output, or ``None``.

    Returns:
        A rich table with one row per system or query.
    """
    table = Table(title="weirflow benchmarks (one machine, one run, side by side)")
    for col in ("benchmark", "system", "events/s", "ratio", "to", "peak RSS (MiB)"):
        table.add_column(col, justify="right" if col in ("events/s", "ratio") else "left")
    table.add_column("latency p50 / p99 (ms)", justify="right")
    if wc is not None:
        latency: dict[str, list[str]] = {}
        for r in wc.get("latency", {}).values():
            latency.setdefault(r["system"], []).append(
                f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} @ {r['rate'] // 1000}k/s"
            )
        for system, t in wc["throughput"].items():
            table.add_row(
                f"windowed_count {wc['events']:,}",
                system,
                f"{t['events_per_s']:,.0f}",
                f"{t['ratio_to_plain_loop']:.2f}",
                "plain loop",
                f"{t['peak_rss_mb']:.0f}",
                "; ".join(latency.get(system, [])) or "-",
            )
    if nx is not None:
        mode = nx["guarantee"]
        if mode != "none":
            mode = f"{mode} {nx['checkpoint_interval_ms']} ms"
        for r in nx["runs"]:
            table.add_row(
                f"nexmark {r['events']:,}",
                f"{r['query']} ({mode})",
                f"{r['events_per_s']:,.0f}",
                f"{r['events_per_s'] / r['flink_per_core']:.2f}",
                "Flink per core",
                f"{r['peak_rss_mb']:.0f}",
                "-",
            )
    if sc is not None:
        _add_scaling(table, sc)
    return table


def _add_scaling(table: Table, sc: dict[str, Any]) -> None:
    p = sc["parallelism"]
    for r in sc["runs"]:
        ratio = sc["ratios"].get(r["workload"]) if r["workers"] == 2 else None
        table.add_row(
            f"scaling {r['events']:,}",
            f"{r['workload']} (p={p}, {r['workers']} worker(s), exactly-once 1 s)",
            f"{r['events_per_s']:,.0f}",
            f"{ratio['process']:.2f}" if ratio else "",
            "1 worker" if ratio else "",
            "-",
            "-",
        )
    ch = sc["channel"]
    table.add_row(
        f"scaling {ch['records']:,}",
        "one cross-process channel (records/s)",
        f"{ch['records_per_s']:,.0f}",
        "",
        "",
        "-",
        "-",
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windowed-count", type=Path, default=None)
    parser.add_argument("--nexmark", type=Path, default=None)
    parser.add_argument("--scaling", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(width=160)
    wc = _load(args.windowed_count, console)
    nx = _load(args.nexmark, console)
    console.print(build_table(wc, nx, _load(args.scaling, console)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
