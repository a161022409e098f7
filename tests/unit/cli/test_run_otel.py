"""`weirflow run --otel`: refused in one line where it cannot work, before anything runs.

Each case runs in a fresh interpreter: ``--otel`` installs OpenTelemetry's
process-wide tracer provider.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")


@pytest.mark.parametrize(
    ("args", "exporter", "message"),
    [
        ([], "nosuch", "OTEL_TRACES_EXPORTER names 'nosuch', which is not installed"),
    ],
)
def test_otel_is_refused_where_it_cannot_work(
    tmp_path: Path, args: list[str], exporter: str, message: str
) -> None:
    (tmp_path / "job.py").write_text("from weirflow import Dataflow\nflow = Dataflow('j')\n")
    done = subprocess.run(
        [sys.executable, "-m", "weirflow.cli", "run", str(tmp_path / "job.py"), "--otel", *args],
        env=dict(os.environ, OTEL_TRACES_EXPORTER=exporter),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr + done.stdout
