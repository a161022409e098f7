"""Helpers for recovery tests: an event log with seeded input, its batch answer, the output."""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from weirflow.eventlog import EventLog, Record

JOB = str(Path(__file__).parent / "jobs" / "windowed_sum.py")


def make_input(
    log_dir: Path, n: int, seed: int, disorder_ms: int = 500, session_gap_ms: int | None = None
) -> Counter[tuple[str, int, int, int, int]]:
    """Write ``n`` events into topic ``events`` (3 partitions) and return the expected results.

    Event time advances 1 ms per event with up to ``disorder_ms`` (< 1000) of
    disorder, so with a 1 s watermark bound no event is late and the answer is
    deterministic. With ``disorder_ms=0`` each partition is in time order.

    Args:
        session_gap_ms: expect session windows of this gap instead of 1 s tumbling windows.

    Returns:
        Multiset of ``(user, window_start, window_end, count, sum)``.
    """
    rng = random.Random(seed)
    records = []
    windows: dict[tuple[str, int], list[int]] = {}
    for i in range(n):
        user = f"u{rng.randrange(50)}"
        ts = max(0, i - rng.randrange(disorder_ms)) if disorder_ms else i
        amount = rng.randrange(1, 100)
        records.append(
            Record(
                json.dumps({"user": user, "amount": amount}).encode(),
                key=user.encode(),
                timestamp_ms=ts,
            )
        )
        acc = windows.setdefault((user, ts - ts % 1000), [0, 0])
        acc[0] += 1
        acc[1] += amount
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 3)
        lg.create_topic("results", 2)
        for s in range(0, n, 10_000):
            lg.append("events", records[s : s + 10_000])
    if session_gap_ms is not None:
        return _sessions(records, session_gap_ms)
    return Counter((u, s, s + 1000, c, t) for (u, s), (c, t) in windows.items())


def _sessions(records: list[Record], gap_ms: int) -> Counter[tuple[str, int, int, int, int]]:
    """Batch sessions: per user, events at most ``gap_ms`` apart share a session."""
    by_user: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        e = json.loads(r.value)
        by_user.setdefault(e["user"], []).append((r.timestamp_ms, e["amount"]))
    out: Counter[tuple[str, int, int, int, int]] = Counter()
    for user, events in by_user.items():
        events.sort()
        start, last, count, total = events[0][0], events[0][0], 0, 0
        for ts, amount in events:
            if ts > last + gap_ms:
                out[(user, start, last + gap_ms, count, total)] += 1
                start, count, total = ts, 0, 0
            last = max(last, ts)
            count += 1
            total += amount
        out[(user, start, last + gap_ms, count, total)] += 1
    return out


def committed_results(log_dir: Path) -> Counter[tuple[str, int, int, int, int]]:
    """Read every committed record of topic ``results`` as a multiset of window results."""
    out: Counter[tuple[str, int, int, int, int]] = Counter()
    with EventLog(log_dir) as lg:
        for p in range(lg.partition_count("results")):
            pos = 0
            while True:
                batch = lg.read("results", p, pos, max_records=5000)
                if not batch:
                    break
                for r in batch:
                    key, start, end, (count, total), _firing = json.loads(r.value)  # type: ignore[arg-type]
                    out[(key, start, end, count, total)] += 1
                pos = batch[-1].offset + 1
    return out


def run_command(chk: Path, *extra: str) -> list[str]:
    """``weirflow run`` of :data:`JOB` at parallelism 2, checkpoints every 100 ms under ``chk``."""
    return [
        sys.executable,
        "-m",
        "weirflow.cli",
        "run",
        JOB,
        "--parallelism=2",
        f"--checkpoint-dir={chk}",
        "--checkpoint-interval=100ms",
        *extra,
    ]


def completed_checkpoints(chk: Path) -> list[int]:
    """Ids of the completed checkpoints of :data:`JOB` under ``chk``, ascending."""
    return sorted(int(p.parent.name[4:]) for p in chk.glob("windowed_sum/chk-*/_manifest"))


def wait_for_checkpoints(chk: Path, n: int, timeout_s: float = 60) -> None:
    """Wait until checkpoint ``n`` or a newer one completed.

    Raises:
        AssertionError: none did within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = completed_checkpoints(chk)
        if done and done[-1] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {n} within {timeout_s} s")


def supervised_args(
    chk: Path, parallelism: int, guarantee: str = "exactly_once", *extra: str
) -> list[str]:
    """``weirflow run`` options of a chaos run under the supervisor: checkpoints every 100 ms
    under ``chk``, up to 200 restarts 50 ms apart."""
    return [
        f"--parallelism={parallelism}",
        f"--checkpoint-dir={chk}",
        "--checkpoint-interval=100ms",
        f"--guarantee={guarantee}",
        "--restart-strategy=fixed-delay",
        "--max-restarts=200",
        "--restart-delay=50ms",
        *extra,
    ]


def two_worker_args(chk: Path, parallelism: int, *extra: str) -> list[str]:
    """``weirflow run`` options of a chaos run on 2 worker processes: checkpoints every
    100 ms under ``chk``, restarts without limit after 20 ms, workers given up after 5 s."""
    return [
        f"--parallelism={parallelism}",
        "--workers=2",
        f"--checkpoint-dir={chk}",
        "--checkpoint-interval=100ms",
        "--restart-strategy=fixed-delay",
        "--max-restarts=1000",
        "--restart-delay=20ms",
        "--heartbeat-timeout=5s",
        *extra,
    ]


def chaos_env(log_dir: Path, seed: int, faults: str, **variables: str) -> dict[str, str]:
    """This process's environment plus the job's event log, the fault points (``WEIRFLOW_FAULTS``
    syntax) seeded with ``seed``, and the job's own ``variables``."""
    return dict(
        os.environ,
        WF_LOG_DIR=str(log_dir),
        WEIRFLOW_FAULTS=faults,
        WEIRFLOW_FAULT_SEED=str(seed),
        **variables,
    )


class ThrottleRelease:
    """Ends the test jobs' per-record pause (``WF_THROTTLE_US``, see ``jobs/windowed_sum_core``)
    once nothing acts on the job any more, e.g. after a chaos run's last kill: the pause only
    keeps the job running while the kills land, so the input left then runs at full speed, the
    same records and the same output, sooner.

    Give :attr:`env` to the job; call the object (or hand it to
    ``run_under_chaos(after_last_kill=...)``) to end the pause.

    Args:
        folder: where the release file goes (it must not exist yet).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "throttle-released"
        self.env = {"WF_THROTTLE_RELEASE": str(self.path)}

    def __call__(self) -> None:
        self.path.touch()


def assert_exact_output(log_dir: Path, expected: Counter[Any], describe: str) -> None:
    """Fail unless topic ``results`` holds exactly ``expected``: nothing missing, nothing twice.

    Args:
        log_dir: the event log.
        expected: the batch answer.
        describe: the chaos report's description, for the message.
    """
    got = committed_results(log_dir)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (
        f"{sum(missing.values())} missing, {sum(extra.values())} extra; {describe}"
    )


class CheckpointsSinceLastCall:
    """``progressed`` for :func:`weirflow.testing.run_under_chaos`: ``True`` when the run log
    shows a completed checkpoint matching ``pattern`` that it did not show at the last ``True``.

    Args:
        log_path: the chaos run's log.
        pattern: a regular expression for the log line of such a checkpoint.
    """

    def __init__(self, log_path: Path, pattern: str = r"checkpoint \d+ completed") -> None:
        self.log_path = log_path
        self.pattern = re.compile(pattern)
        self.seen = 0

    def __call__(self) -> bool:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        n = len(self.pattern.findall(text))
        if n > self.seen:
            self.seen = n
            return True
        return False
