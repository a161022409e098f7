"""Downtime of ``weirflow rescale`` for a job holding a chosen amount of keyed state.

A ``weirflow run`` of ``jobs/keyed_state.py`` at parallelism 1 builds
``--state-mb`` MB of keyed state (10,000 keys); once a checkpoint holding all
of it completed, ``weirflow rescale keyed_state --parallelism 2`` stops it
with a savepoint and starts it again from there. Reported, per run:

* the downtime ``weirflow rescale`` prints: stop request → the new run's
  control endpoint is up (savepoint taken and copied, old processes gone,
  new ones started; the restore comes after);
* stop request → the new run processed its first record (state restored),
  from the job's ``FIRST_RECORD`` marks;
* the savepoint's size.

Usage: ``python benchmarks/rescale.py [--state-mb MB] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
_KEYS = 10_000


def _wait_for_full_checkpoint(log_path: Path, state_bytes: int, deadline: float) -> None:
    while True:
        sizes = re.findall(r"completed \(\d+ ms, (\d+) bytes\)", log_path.read_text())
        if max(map(int, sizes), default=0) >= state_bytes:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"no full checkpoint in time: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)


def _first_record_after(log_path: Path, after: float, deadline: float) -> float:
    while time.monotonic() < deadline:
        marks = [float(t) for t in re.findall(r"FIRST_RECORD (\S+)", log_path.read_text())]
        later = [t for t in marks if t > after]
        if later:
            return later[0]
        time.sleep(0.05)
    raise SystemExit(f"the rescaled job processed nothing in time: {log_path}")


def rescale_once(state_bytes: int, timeout_s: float = 900) -> tuple[int, float, int]:
    """Run, rescale 1 → 2, and measure.

    Returns:
        ``(reported downtime ms, seconds until the new run's first record, savepoint bytes)``.
    """
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory() as d:
        chk = f"{d}/chk"
        log_path = Path(d) / "run.log"
        env = dict(os.environ, WF_STATE_BYTES=str(state_bytes), WF_KEYS=str(_KEYS))
        weirflow = [sys.executable, "-m", "weirflow.cli"]
        with open(log_path, "wb") as log:
            sup = subprocess.Popen(
                [*weirflow, "run", str(HERE / "jobs" / "keyed_state.py"), f"--checkpoint-dir={chk}",
                 "--checkpoint-interval=1s"],
                env=env, stdout=log, stderr=log, cwd=d,
            )  # fmt: skip
            _wait_for_full_checkpoint(log_path, state_bytes, deadline)
            asked = time.time()
            done = subprocess.run(
                [*weirflow, "rescale", "keyed_state", "--parallelism=2", f"--checkpoint-dir={chk}"],
                env=env, capture_output=True, text=True, timeout=timeout_s,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"rescale failed: {done.stderr}")
            sup.wait(timeout=60)
        downtime_ms = int(re.findall(r"downtime (\d+) ms", done.stdout)[0])
        pid = int(re.findall(r"process (\d+) logs to", done.stdout)[0])
        new_log = Path(re.findall(r"logs to (\S+)", done.stdout)[0])
        savepoint = Path(re.findall(r"from savepoint file://(\S+);", done.stdout)[0])
        try:
            first = _first_record_after(new_log, asked, deadline)
        finally:
            os.killpg(pid, signal.SIGKILL)
        size = sum(p.stat().st_size for p in savepoint.rglob("*") if p.is_file())
        return downtime_ms, first - asked, size


def main() -> None:
    """Measure and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state-mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    runs = [rescale_once(args.state_mb << 20) for _ in range(args.repeat)]
    table = Table(title=f"weirflow rescale 1 -> 2 with {args.state_mb} MB of keyed state")
    for col in ("run", "downtime (endpoint up)", "until first record", "savepoint size"):
        table.add_column(col, justify="right")
    for i, (ms, first_s, size) in enumerate(runs):
        table.add_row(str(i + 1), f"{ms} ms", f"{first_s:.2f} s", f"{size / 1e6:.0f} MB")
    if len(runs) > 1:
        table.add_row(
            "median",
            f"{statistics.median(r[0] for r in runs):.0f} ms",
            f"{statistics.median(r[1] for r in runs):.2f} s",
            "",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
