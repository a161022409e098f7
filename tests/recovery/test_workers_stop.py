"""SIGTERM while a job on 2 workers waits out its restart backoff."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

from weirflow.testing.chaos import children

pytestmark = pytest.mark.slow

N = 40_000


def test_sigterm_during_the_restart_backoff_stops_at_once_and_resume_is_exact(
    tmp_path: Path,
) -> None:
    """Scenario: a worker is SIGKILLed, the coordinator waits a 120 s backoff, SIGTERM comes:
    the run stops without waiting it out (exit 0, "stopped"), and a later --restore latest
    run completes the exact answer."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, seed=8)
    env = dict(os.environ, WF_LOG_DIR=str(log_dir), WF_THROTTLE_US="150")
    args = [
        sys.executable, "-m", "weirflow.cli", "run", JOB, "--parallelism=2", "--workers=2",
        f"--checkpoint-dir={tmp_path / 'chk'}", "--checkpoint-interval=100ms",
        "--restart-strategy=fixed-delay", "--max-restarts=3", "--restart-delay=120s",
    ]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 60
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.05)

    try:
        wait_for("checkpoint 2 completed")
        os.kill(children(proc.pid)[0], signal.SIGKILL)
        wait_for("restarting in 120000 ms")
        proc.send_signal(signal.SIGTERM)
        # far less than the backoff: the stop does not wait it out
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=30)
    out = "".join(lines)
    assert rc == 0, out[-3000:]
    assert "stopped" in out
    partial = committed_results(log_dir)
    assert not partial - expected, "a result committed twice or wrong"
    # nothing acts on the resumed run: it goes unthrottled
    done = subprocess.run(
        [*args[:-3], "--restore=latest"],
        env=dict(env, WF_THROTTLE_US="0"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert committed_results(log_dir) == expected
