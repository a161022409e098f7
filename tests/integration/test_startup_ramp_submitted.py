"""``--startup-ramp`` of a job submitted to a standalone ``weirflow coordinator``: the
restored job's reader, in a worker that joined the coordinator, asks for small polls first
and full ones once the ramp is over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from standalone_cluster import standalone_cluster
from weirflow.runtime import RuntimeOptions

JOB = str(Path(__file__).parent / "jobs" / "ramp_polls.py")
#: What a source subtask asks for per poll at full speed (``weirflow run`` has no option for it).
FULL = RuntimeOptions().source_batch_size

pytestmark = pytest.mark.slow


def test_a_submitted_job_ramps_its_sources_after_a_restore(tmp_path: Path) -> None:
    """Scenario: a job runs 100 records through a coordinator and checkpoints; it is
    submitted again with --restore latest --startup-ramp 1s --ramp-start-rate 50 over 20 000
    more. Its first poll asks for fewer than a full batch and its last for a full one; the
    fresh run asked for full batches from the start."""
    polls, rows = tmp_path / "polls.txt", tmp_path / "rows.txt"
    env = dict(os.environ, WF_POLLS=str(polls), WF_ROWS_FILE=str(rows))
    asks: list[list[int]] = []
    with standalone_cluster(tmp_path, env, workers=1) as cluster:
        for n, restore in ((100, "none"), (20_100, "latest")):
            rows.write_text(str(n))
            polls.write_text("")
            command = [
                sys.executable, "-m", "weirflow.cli", "run", JOB,
                f"--checkpoint-dir={tmp_path / 'chk'}", "--checkpoint-interval=10m",
                f"--restore={restore}", "--startup-ramp=1s", "--ramp-start-rate=50",
                *cluster.join,
            ]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{done.stderr[-3000:]}\n{cluster.text()[-3000:]}"
            asks.append([int(line) for line in polls.read_text().split()])
    fresh, restored = asks
    assert set(fresh) == {FULL}, "a fresh start does not ramp"
    assert restored[0] < FULL, f"the submitted job's restored reader was not ramped: {restored}"
    assert restored[-1] == FULL, restored
