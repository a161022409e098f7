"""``weirflow run``: clean stop on SIGTERM and resume; at-most-once; restore errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import (
    JOB,
    ThrottleRelease,
    committed_results,
    make_input,
    run_command,
    wait_for_checkpoints,
)

from weirflow.testing import ChaosConfig, children, run_under_chaos

pytestmark = pytest.mark.slow

N = 60_000


def _env(log_dir: Path, sink: str = "exactly_once", throttle_us: int = 40) -> dict[str, str]:
    return dict(
        os.environ,
        WF_LOG_DIR=str(log_dir),
        WF_THROTTLE_US=str(throttle_us),
        WF_SINK_GUARANTEE=sink,
    )


def _cmd(tmp_path: Path, *extra: str) -> list[str]:
    return run_command(tmp_path / "chk", *extra)


def test_sigterm_stops_cleanly_and_resume_is_exact(tmp_path: Path) -> None:
    """Scenario: SIGTERM mid-run → a stop savepoint into the default folder, exit 0; a run
    restoring that savepoint finishes exactly."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, 3)
    with open(tmp_path / "run.log", "wb") as log:
        sup = subprocess.Popen(_cmd(tmp_path), env=_env(log_dir), stdout=log, stderr=log)
        wait_for_checkpoints(tmp_path / "chk", 3)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()
        partial = committed_results(log_dir)
        assert partial - expected == Counter(), "a stopped run committed a wrong or duplicate"
        assert sum(partial.values()) < sum(expected.values()), "the stop came too late to test"
        said = (tmp_path / "run.log").read_text()
        assert "stop savepoint written to " in said, said[-3000:]
        folder = Path(
            said.split("stop savepoint written to ")[1].split()[0].removeprefix("file://")
        )
        assert folder.parent.name == "savepoints" and folder.parents[2] == tmp_path / "chk"
        # nothing acts on the resumed run: it goes unthrottled
        rc = subprocess.run(
            _cmd(tmp_path, f"--restore={folder}"),
            env=_env(log_dir, throttle_us=0),
            stdout=log,
            stderr=log,
        ).returncode
    assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert committed_results(log_dir) == expected


def test_at_most_once_never_counts_an_event_twice(tmp_path: Path) -> None:
    """Scenario: at-most-once with 6 worker kills: no window counts more events than exist."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, 4)
    release = ThrottleRelease(tmp_path)
    run_under_chaos(
        JOB,
        [
            "--parallelism=2",
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--guarantee=at_most_once",
            "--max-restarts=100",
            "--restart-delay=50ms",
        ],
        ChaosConfig(kills=6, seed=17),
        log_path=tmp_path / "chaos.log",
        env={**_env(log_dir, sink="at_least_once"), **release.env},
        after_last_kill=release,
    )
    want: dict[tuple[str, int], tuple[int, int]] = {(u, s): (c, t) for u, s, _e, c, t in expected}
    got: dict[tuple[str, int], list[int]] = {}
    for (u, s, _e, c, t), times in committed_results(log_dir).items():
        acc = got.setdefault((u, s), [0, 0])
        acc[0] += c * times
        acc[1] += t * times
    assert got, "at-most-once produced no output at all"
    for key, (count, total) in got.items():
        assert key in want, f"window {key} does not exist in the input"
        assert count <= want[key][0] and total <= want[key][1], f"{key} counted twice"


def test_restore_latest_without_checkpoint_exits_with_a_clear_message(tmp_path: Path) -> None:
    """Scenario: --restore latest with no checkpoint → exit 2 and how to start fresh."""
    log_dir = tmp_path / "log"
    make_input(log_dir, 100, 5)
    out = subprocess.run(
        _cmd(tmp_path, "--restore=latest", "--max-restarts=0"),
        env=_env(log_dir, throttle_us=0),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert "no usable completed checkpoint" in out.stderr
    assert "Traceback" not in out.stderr
    fresh = subprocess.run(
        _cmd(tmp_path, "--restore=latest-or-fresh"),
        env=_env(log_dir, throttle_us=0),
        capture_output=True,
        text=True,
    )
    assert fresh.returncode == 0, fresh.stderr


def test_sigterm_during_a_restart_backoff_stops_without_another_worker(tmp_path: Path) -> None:
    """Scenario: the worker is SIGKILLed, and SIGTERM comes while the supervisor waits out a
    one-hour restart delay: it exits 0 at once and starts no other worker."""
    log_dir, log_file = tmp_path / "log", tmp_path / "run.log"
    make_input(log_dir, N, 4)
    with open(log_file, "wb") as log:
        sup = subprocess.Popen(
            _cmd(tmp_path, "--restart-delay=1h"), env=_env(log_dir), stdout=log, stderr=log
        )
        try:
            wait_for_checkpoints(tmp_path / "chk", 1)
            (worker,) = children(sup.pid)
            os.kill(worker, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while "restart 1 in" not in log_file.read_text():
                assert time.monotonic() < deadline, "no restart was scheduled"
                time.sleep(0.05)
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(timeout=60) == 0, log_file.read_text()[-3000:]
        finally:
            if sup.poll() is None:
                sup.kill()
                sup.wait()
    assert log_file.read_text().count(": starting from") == 1
