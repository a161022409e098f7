"""``windowed_count`` on Bytewax 0.21.1, run by the interpreter of ``benchmarks/.peers/bytewax``.

Bytewax's own windowing: ``key_on`` the user, ``fold_window`` with an
``EventClock`` (``wait_for_system_duration`` = 500 ms, the workload's
out-of-orderness) and a 10 s ``TumblingWindower`` aligned to the epoch.
Settings the workload requires, everything else at Bytewax's defaults:

- the watermark follows event time only (``max_ts - 500 ms``): the clock's
  ``now_getter`` is frozen, because by default Bytewax adds the system time
  elapsed since the largest timestamp, which under recovery pauses made a few
  events late here and dropped them; with ``to_system_utc`` returning
  ``None`` windows close on new items or end of input, not on system time;
- input: a ``FixedPartitionedSource`` with one partition that emits the
  workload's events in batches of 1,000 (its resume state is the count
  emitted, so recovery replays exactly);
- recovery on: a SQLite recovery directory (``init_db_dir``, one partition)
  and ``epoch_interval`` = 1 s, the snapshot interval weirflow is run with
  (Bytewax's default epoch is 10 s).

Prints one JSON object (see ``common.summarize``; with ``--rate``, also
``latency``).

Usage: python bytewax_windowed_count.py --events N [--recovery] [--rate R]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bytewax.operators as op
import bytewax.operators.windowing as win
import common
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

import workloads

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 1000


class _EventsPartition(StatefulSourcePartition[dict[str, Any], int]):
    def __init__(self, n: int, resume: int | None, rate: int | None, t0: float) -> None:
        self._pos = resume or 0
        self._it = itertools.islice(workloads.events(n), self._pos, None)
        self._rate = rate
        self._t0 = t0

    def next_batch(self) -> list[dict[str, Any]]:
        count = BATCH
        if self._rate is not None:
            due = int((time.monotonic() - self._t0) * self._rate) + 1
            count = min(count, due - self._pos)
            if count <= 0:
                return []
        batch = list(itertools.islice(self._it, count))
        if not batch:
            raise StopIteration
        self._pos += len(batch)
        return batch

    def next_awake(self) -> datetime | None:
        if self._rate is None:
            return None
        wait_s = self._t0 + self._pos / self._rate - time.monotonic()
        return datetime.now(UTC) + timedelta(seconds=max(0.0, wait_s))

    def snapshot(self) -> int:
        return self._pos


class EventsSource(FixedPartitionedSource[dict[str, Any], int]):
    """The workload's events, one partition, optionally released at ``rate`` events/s."""

    def __init__(self, n: int, rate: int | None = None, t0: float = 0.0) -> None:
        self.n = n
        self.rate = rate
        self.t0 = t0

    def list_parts(self) -> list[str]:
        return ["events"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        return _EventsPartition(self.n, resume_state, self.rate, self.t0)


class _StampPartition(StatelessSinkPartition[Any]):
    def __init__(self, out: list[tuple[Any, float]]) -> None:
        self._out = out

    def write_batch(self, items: list[Any]) -> None:
        now = time.monotonic()
        self._out.extend((item, now) for item in items)


class StampSink(DynamicSink[Any]):
    """Appends ``(item, monotonic arrival time)`` to a list."""

    def __init__(self, out: list[tuple[Any, float]]) -> None:
        self.out = out

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _StampPartition(self.out)


def run(n: int, recovery: bool, rate: int | None = None) -> dict[str, Any]:
    """Run the workload once; return the summary (and latency when ``rate`` is given)."""
    t0 = time.monotonic() + 0.2
    out: list[tuple[Any, float]] = []
    flow = Dataflow("windowed_count")
    events = op.input("events", flow, EventsSource(n, rate, t0))
    keyed = op.key_on("by_user", events, lambda e: e["user"])
    clock = win.EventClock(
        ts_getter=lambda e: EPOCH + timedelta(milliseconds=e["ts"]),
        wait_for_system_duration=timedelta(milliseconds=workloads.OUT_OF_ORDERNESS_MS),
        now_getter=lambda: EPOCH,
        to_system_utc=lambda _ts: None,
    )
    windower = win.TumblingWindower(
        length=timedelta(milliseconds=workloads.WINDOW_MS), align_to=EPOCH
    )
    counts = win.fold_window(
        "count_sum",
        keyed,
        clock,
        windower,
        lambda: (0, 0),
        lambda acc, e: (acc[0] + 1, acc[1] + e["amount"]),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
    )
    op.output("out", counts.down, StampSink(out))
    with tempfile.TemporaryDirectory(prefix="bytewax-recovery-") as tmp:
        start = time.perf_counter()
        if recovery:
            init_db_dir(Path(tmp), 1)
            run_main(
                flow,
                epoch_interval=timedelta(seconds=1),
                recovery_config=RecoveryConfig(Path(tmp)),
            )
        else:
            run_main(flow)
        seconds = time.perf_counter() - start
    size = workloads.WINDOW_MS
    rows = [(user, wid * size, c, s) for (user, (wid, (c, s))), _t in out]
    summary = common.summarize(rows, seconds)
    if rate is not None:
        arrivals = [(wid * size + size, t) for (_user, (wid, _v)), t in out]
        summary["latency"] = common.latency_summary(arrivals, n, rate, t0)
    return summary


def main() -> None:
    """Parse arguments, warm up, run once, print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--recovery", action="store_true")
    parser.add_argument("--rate", type=int, default=None)
    args = parser.parse_args()
    run(2000, args.recovery)
    print(json.dumps(run(args.events, args.recovery, args.rate)))


if __name__ == "__main__":
    main()
