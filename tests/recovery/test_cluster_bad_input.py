"""Bad input to a cluster: each is a one-line error naming the problem and the fix, exit ≠ 0,
and nothing committed is damaged."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

from weirflow.testing.hosts import TestNetwork, can_create_hosts, write_token

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "weirflow.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _wait_for(path: Path, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} not in {path}"
        time.sleep(0.1)


def test_a_worker_with_the_wrong_secret_is_refused(tmp_path: Path) -> None:
    """Scenario: a worker holds another secret; it exits 2 naming --token-file, and the
    coordinator logs the refusal and decodes nothing it sent."""
    address = f"127.0.0.1:{_free_port()}"
    good, bad = write_token(tmp_path / "good"), write_token(tmp_path / "bad")
    log = tmp_path / "coordinator.log"
    with log.open("ab") as out:
        coordinator = subprocess.Popen(
            [*CLI, "coordinator", "--listen", address, "--token-file", str(good)],
            stdout=out,
            stderr=out,
        )
    try:
        _wait_for(log, "listening")
        done = subprocess.run(
            [*CLI, "worker", "--coordinator", address, "--token-file", str(bad)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        (line,) = _error_lines(done.stderr)
        assert "--token-file" in line and "Traceback" not in done.stderr
        _wait_for(log, "refused a connection")
    finally:
        coordinator.terminate()
        coordinator.wait(timeout=30)


def test_an_unreachable_coordinator_is_one_line(tmp_path: Path) -> None:
    """Scenario: nothing listens at --coordinator; the worker gives up after its connect
    timeout with one line that names the address and what to check."""
    token = write_token(tmp_path / "token")
    address = f"127.0.0.1:{_free_port()}"
    done = subprocess.run(
        [*CLI, "worker", "--coordinator", address, "--token-file", str(token),
         "--connect-timeout", "1s"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = _error_lines(done.stderr)
    assert f"cannot reach the coordinator at {address}" in line and "Traceback" not in done.stderr


def test_more_parallelism_than_slots_fails_with_the_fix(tmp_path: Path) -> None:
    """Scenario: parallelism 3 on one worker with 2 slots; after --worker-wait the job fails,
    naming the slots needed and offered, and commits nothing."""
    log_dir = tmp_path / "log"
    make_input(log_dir, 500, seed=3)
    token = write_token(tmp_path / "token")
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, WF_LOG_DIR=str(log_dir))
    out = (tmp_path / "cluster.log").open("ab")
    procs = [
        subprocess.Popen(
            [
                *CLI,
                "coordinator",
                "--listen",
                address,
                "--token-file",
                str(token),
                "--worker-wait",
                "2s",
            ],
            env=env,
            stdout=out,
            stderr=out,
        ),
        subprocess.Popen(
            [*CLI, "worker", "--coordinator", address, "--token-file", str(token), "--slots", "2"],
            env=env,
            stdout=out,
            stderr=out,
        ),
    ]
    try:
        _wait_for(tmp_path / "cluster.log", "joined")
        done = subprocess.run(
            [*CLI, "run", JOB, "--coordinator", address, "--token-file", str(token),
             "--parallelism", "3", "--checkpoint-dir", str(tmp_path / "chk")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    assert done.returncode == 1
    (line,) = _error_lines(done.stderr)
    assert "3 free slots" in line and "offer 2" in line and "--parallelism" in line
    assert sum(committed_results(log_dir).values()) == 0


@pytest.mark.skipif(can_create_hosts() is not None, reason=f"{can_create_hosts()}")
@pytest.mark.parametrize("hidden", ["job", "checkpoints"])
def test_a_worker_that_cannot_see_the_job_or_the_checkpoint_folder(
    tmp_path: Path, hidden: str
) -> None:
    """Scenario: on one of two worker hosts the job's folder (or the checkpoint folder) is
    not there; the job fails at once with one line naming the host and the fix, exit 1,
    and nothing is committed."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = jobs / "job.py"
    job.write_text(Path(JOB).read_text())
    (jobs / "windowed_sum_core.py").write_text(
        (Path(JOB).parent / "windowed_sum_core.py").read_text()
    )
    shared = tmp_path / "shared"
    shared.mkdir()
    log_dir = tmp_path / "log"
    make_input(log_dir, 2_000, seed=3)
    token = write_token(tmp_path / "token")
    env = dict(os.environ, WF_LOG_DIR=str(log_dir))
    with TestNetwork(3) as net:
        address = f"{net.hosts[0].address}:7000"
        log = (tmp_path / "cluster.log").open("ab")
        net.spawn(
            net.hosts[0],
            [*CLI, "coordinator", "--listen", address, "--token-file", str(token)],
            env=env, log=log,
        )  # fmt: skip
        for k, host in enumerate(net.hosts[1:]):
            net.spawn(
                host,
                [*CLI, "worker", "--coordinator", address, "--token-file", str(token),
                 "--slots", "1", "--host-address", host.address],
                env=env, log=log,
                hide=[jobs if hidden == "job" else shared] if k == 1 else [],
            )  # fmt: skip
        _wait_for(tmp_path / "cluster.log", "h2 with 1 slot")
        _wait_for(tmp_path / "cluster.log", "h1 with 1 slot")
        done = subprocess.run(
            ["ip", "netns", "exec", net.hosts[0].namespace,
             *CLI, "run", str(job), "--coordinator", address, "--token-file", str(token),
             "--parallelism", "2", "--checkpoint-dir", str(shared / "chk")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (line,) = _error_lines(done.stderr)
    if hidden == "job":
        assert "host h2 cannot load the job" in line and "same path on every worker" in line
    else:
        assert "does not share with the coordinator" in line and "s3://" in line
    assert sum(committed_results(log_dir).values()) == 0
