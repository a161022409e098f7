"""The Nexmark and windowed_count benchmarks run on tiny inputs and pass their own checks
(peers excluded), and their shared measuring helpers compute what they claim."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))

import common

import windowed_count
import workloads

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load_nexmark_run() -> ModuleType:
    """Load ``benchmarks/nexmark/run.py`` under a name no other test module can take."""
    sys.path.insert(0, str(BENCH / "nexmark"))
    spec = importlib.util.spec_from_file_location("nexmark_bench_run", BENCH / "nexmark" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nexmark_run = _load_nexmark_run()


def run_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def nexmark_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nexmark") / "nexmark.json"
    proc = run_script(
        str(BENCH / "nexmark" / "run.py"),
        "--events",
        "3000",
        "--check",
        "--checkpoint-interval",
        "50ms",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WRONG" not in proc.stdout and "check failed" not in proc.stdout
    return out


@pytest.fixture(scope="module")
def windowed_count_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wc") / "windowed_count.json"
    proc = run_script(
        str(BENCH / "windowed_count.py"),
        "--events",
        "3000",
        "--repeat",
        "1",
        "--latency",
        "--latency-rate",
        "40000",
        "--latency-seconds",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check failed" not in proc.stdout
    return out


def test_nexmark_runs_every_query_with_checkpoints_and_correct_output(nexmark_json: Path) -> None:
    data = json.loads(nexmark_json.read_text())
    runs = {r["query"]: r for r in data["runs"]}
    assert list(runs) == ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q11"]
    assert all(r["correct"] is True for r in runs.values())
    assert all(r["events"] == 3000 and r["events_per_s"] > 0 for r in runs.values())
    assert runs["q0"]["results"] == 3000 * 92 // 100
    assert data["guarantee"] == "exactly_once" and data["checkpoint_interval_ms"] == 50


def test_windowed_count_reports_throughput_and_latency(windowed_count_json: Path) -> None:
    data = json.loads(windowed_count_json.read_text())
    systems = data["throughput"]
    assert set(systems) == {
        "plain loop",
        "weirflow (p=1)",
        "weirflow (p=1, exactly-once, 1 s checkpoints)",
    }
    assert systems["plain loop"]["ratio_to_plain_loop"] == 1.0
    assert data["checks_failed"] == []
    latency = list(data["latency"].values())
    assert {r["system"] for r in latency} == {
        "weirflow (p=1)",
        "weirflow (p=1, exactly-once, 1 s checkpoints)",
    }
    # 31,000 events: window ends 10 s, 20 s and 30 s close before the input ends
    assert all(r["windows"] == 3000 and r["rate"] == 40000 for r in latency)
    assert all(0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in latency)


def test_summary_prints_one_table_of_all(
    nexmark_json: Path, windowed_count_json: Path, scaling_json: Path
) -> None:
    proc = run_script(
        str(BENCH / "peers" / "summary.py"),
        "--windowed-count",
        str(windowed_count_json),
        "--nexmark",
        str(nexmark_json),
        "--scaling",
        str(scaling_json),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("weirflow benchmarks") == 1
    rows = ("plain loop", "q11 (exactly_once 50 ms)", "Flink per core", "@ 40k/s")
    rows += ("flights (p=2, 2 worker(s)", "one cross-process channel")
    for row in rows:
        assert row in proc.stdout


def test_due_index_is_the_first_event_whose_watermark_reaches_the_window_end() -> None:
    n = 25_000
    due = common.due_index_by_window_end(n)
    events = list(workloads.events(n))
    for end, i in due.items():
        prefix_max = max(e["ts"] for e in events[: i + 1])
        before_max = max((e["ts"] for e in events[:i]), default=-1)
        assert prefix_max - workloads.OUT_OF_ORDERNESS_MS >= end
        assert before_max - workloads.OUT_OF_ORDERNESS_MS < end
    assert sorted(due) == [10_000, 20_000]


def test_latency_is_arrival_minus_the_due_time_of_the_closing_event() -> None:
    n = 25_000
    due = common.due_index_by_window_end(n)
    t0 = 100.0
    rate = 1000
    arrivals = [
        (10_000, t0 + due[10_000] / rate + 0.004),
        (20_000, t0 + due[20_000] / rate + 0.010),
        (30_000, t0 + 99.0),  # flushed at end of input: not counted
    ]
    summary = common.latency_summary(arrivals, n, rate, t0)
    assert summary["windows"] == 2
    assert summary["p50_ms"] == pytest.approx(7.0)
    assert summary["max_ms"] == pytest.approx(10.0)


def test_peer_summary_digest_matches_the_in_process_one() -> None:
    bench = windowed_count
    rows = workloads.plain_loop(3000)
    peer_side = common.summarize(list(rows), 1.0)
    in_process = bench.run_once("plain loop", 3000)
    assert peer_side["digest"] == in_process.digest
    assert peer_side["windows"] == in_process.windows == len(rows)


def test_paced_source_releases_events_no_faster_than_the_rate() -> None:
    bench = windowed_count
    source = bench.PacedEvents(1000, rate=1000, t0=time.monotonic() + 3600)
    reader = source.create_reader(["0"], {})
    assert reader.poll(100) is None and reader.positions() == {"0": 0}
    source = bench.PacedEvents(1000, rate=1000, t0=time.monotonic() - 0.0505)
    reader = source.create_reader(["0"], {})
    batch = reader.poll(1000)
    assert batch is not None and 51 <= len(batch.values) <= 1000
    assert batch.values == list(workloads.events(len(batch.values)))


@pytest.mark.parametrize(
    ("text", "ms"), [("1s", 1000), ("500ms", 500), ("2m", 120_000), ("250", 250), ("1.5s", 1500)]
)
def test_checkpoint_interval_parsing(text: str, ms: int) -> None:
    assert nexmark_run.parse_interval(text) == ms


def test_checkpoint_interval_parsing_refuses_nonsense() -> None:
    import argparse

    for bad in ("0s", "soon", "-1s"):
        with pytest.raises(argparse.ArgumentTypeError):
            nexmark_run.parse_interval(bad)


@pytest.fixture(scope="module")
def scaling_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scaling") / "scaling.json"
    proc = run_script(
        str(BENCH / "scaling.py"),
        "--events",
        "3000",
        "--nexmark-events",
        "2000",
        "--flights-rows",
        "2000",
        "--channel-records",
        "20000",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_scaling_runs_every_workload_on_one_and_two_workers_with_verified_output(
    scaling_json: Path,
) -> None:
    data = json.loads(scaling_json.read_text())
    runs = {(r["workload"], r["workers"]): r for r in data["runs"]}
    names = ["windowed_count", "nexmark q0", "nexmark q4", "nexmark q5", "nexmark q8", "flights"]
    assert sorted(runs) == sorted((w, n) for w in names for n in (1, 2))
    assert data["checks_failed"] == []
    assert all(r["verified"] and r["errors"] == [] for r in runs.values())
    # 3,000 events of windowed_count fall into 945 (user, 10 s window) pairs; q0 keeps the bids
    assert runs["windowed_count", 2]["results"] == len(workloads.plain_loop(3000))
    assert runs["nexmark q0", 1]["results"] == runs["nexmark q0", 2]["results"] == 2000 * 92 // 100
    assert all(r["checkpoints"] >= 1 and r["events_per_s"] > 0 for r in runs.values())
    assert all(r["cpu_seconds"] > 0 for r in runs.values())
    assert set(data["ratios"]) == set(names)
    # a window fires once, and again for late flights within its allowed lateness
    assert 0 < data["flights_batch"]["windows"] <= runs["flights", 1]["results"]
    assert data["channel"]["records"] == 20000
    assert data["checkpoint_ms"]["count"] >= 6
    assert len(data["targets"]) == 5


def test_scaling_output_check_rejects_a_missing_window(tmp_path: Path) -> None:
    import scaling_inputs
    from weirflow.eventlog import EventLog, Record

    n = 3000
    rows = workloads.plain_loop(n)
    for name, kept in (("whole", rows), ("short", rows[1:])):
        with EventLog(tmp_path / name) as lg:
            lg.create_topic("results", 2)
            lg.append("results", [Record(json.dumps(list(r)).encode()) for r in kept])
    assert scaling_inputs.check_windowed_count(tmp_path / "whole", n) == (len(rows), [])
    count, errors = scaling_inputs.check_windowed_count(tmp_path / "short", n)
    assert count == len(rows) - 1
    assert any("counts sum" in e for e in errors)
    assert any("differ from the plain loop" in e for e in errors)
