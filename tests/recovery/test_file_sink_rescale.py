"""FileSink across a crash and a restore at another parallelism, in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaos_helpers import make_input
from test_file_sink_chaos import JOB, committed_parts

from weirflow.checkpoint import CheckpointStorage

pytestmark = pytest.mark.slow

N = 30_000
WAIT_S = 120


def _command(tmp_path: Path, parallelism: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "weirflow.cli",
        "run",
        JOB,
        f"--parallelism={parallelism}",
        f"--checkpoint-dir={tmp_path / 'chk'}",
        "--checkpoint-interval=100ms",
        "--restart-strategy=none",
        *extra,
    ]


@pytest.mark.parametrize(("before", "after"), [(3, 1), (1, 3)])
def test_file_sink_restores_at_another_parallelism(
    tmp_path: Path, chaos_seed: int, before: int, after: int
) -> None:
    """Scenario: SIGKILL the supervisor after two checkpoints, resume at another parallelism."""
    expected = make_input(tmp_path / "log", N, chaos_seed)
    env = dict(
        os.environ,
        WF_LOG_DIR=str(tmp_path / "log"),
        WF_OUT_DIR=str(tmp_path / "out"),
        WF_ROLLING="300",
        WF_THROTTLE_US="100",
    )
    storage = CheckpointStorage(str(tmp_path / "chk"), "file_windowed_sum")
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(_command(tmp_path, before), stderr=log, stdout=log, env=env)
        try:
            deadline = time.monotonic() + WAIT_S
            while len(storage.completed_checkpoints()) < 2 and first.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint completed in time"
                time.sleep(0.05)
        finally:
            # The worker dies with the supervisor (parent-death signal).
            if first.poll() is None:
                os.kill(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    restored_from = storage.completed_checkpoints()[-1]
    # nothing acts on the resumed run: it goes unthrottled
    second = subprocess.run(
        _command(tmp_path, after, "--restore=latest"),
        capture_output=True,
        text=True,
        env=dict(env, WF_THROTTLE_US="0"),
        timeout=WAIT_S,
    )
    assert second.returncode == 0, second.stderr
    assert f"starting from checkpoint {restored_from}" in second.stderr
    got = committed_parts(tmp_path / "out")
    assert got == expected, f"missing {expected - got}, extra {got - expected}"
    assert [n for n in os.listdir(tmp_path / "out") if n.startswith(".")] == []
