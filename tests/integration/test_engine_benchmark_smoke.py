"""The windowed_count benchmark still runs and still checks its output (tiny N)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "windowed_count.py"


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("windowed_count_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_both_systems_and_passes_its_checks() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--events", "3000", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plain loop" in proc.stdout
    assert "weirflow (p=1)" in proc.stdout
    assert "check failed" not in proc.stdout
    assert "ratio to plain loop" in proc.stdout


def test_checks_catch_a_wrong_output() -> None:
    bench = load_benchmark()
    good = bench.run_once("plain loop", 3000)
    assert bench.check("plain loop", good, 3000, good) == []
    short = good._replace(count_sum=good.count_sum - 1)
    assert bench.check("weirflow", short, 3000, good)
    different = good._replace(digest="0" * 64)
    assert bench.check("weirflow", different, 3000, good)
    full_but_wrong = good._replace(count_sum=2_000_000, windows=199_983, amount_sum=100_966_746)
    assert bench.check("weirflow", full_but_wrong, 2_000_000, None)
