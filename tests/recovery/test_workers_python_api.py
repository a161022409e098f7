"""``Dataflow.run(workers=N)`` from a Python script: the same job on worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

from weirflow import Dataflow
from weirflow.connectors import CollectSink, IterableSource
from weirflow.errors import ConfigError

pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys
sys.path.insert(0, {jobs!r})
from windowed_sum_core import windowed_sum
from weirflow import CheckpointConfig
from weirflow.connectors import EventLogSink, EventLogSource

LOG_DIR = os.environ["WF_LOG_DIR"]
flow = windowed_sum(
    "windowed_sum", EventLogSource(LOG_DIR, "events"), EventLogSink(LOG_DIR, "results")
)

if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO)
    result = flow.run(
        4, workers=2, checkpoint=CheckpointConfig(storage=sys.argv[1]), restore=None
    )
    print("records in:", result.operators["events"].records_in)
"""


def test_run_with_workers_from_a_script_gives_the_batch_answer(tmp_path: Path) -> None:
    """Scenario: a script's module-level dataflow runs with workers=2; exact output."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, 20_000, seed=9)
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(jobs=str(Path(JOB).parent)))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "chk")],
        env=dict(os.environ, WF_LOG_DIR=str(log_dir)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "records in: 20000" in done.stdout
    assert done.stderr.count(" joined from ") == 2, done.stderr[-2000:]  # two worker processes
    assert committed_results(log_dir) == expected


def test_a_dataflow_that_workers_cannot_import_is_refused() -> None:
    """Scenario: a dataflow built inside a function has no module-level name to import."""

    def build() -> Dataflow:
        flow = Dataflow("local_only")
        flow.source(IterableSource([1, 2, 3])).sink(CollectSink())
        return flow

    with pytest.raises(ConfigError, match="module-level variable"):
        build().run(2, workers=2)
