"""``weirflow run`` fails before the first record on an unusable checkpoint storage, does not
restart a failure that recurs, and words its summary and advice for the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

JOB = """
import itertools, os
from weirflow import Dataflow
from weirflow.connectors import CollectSink, IterableSource

ENDLESS = os.environ.get("WF_ENDLESS") == "1"
ERRORS = {"value": ValueError, "connection": ConnectionError}

def check(x):
    if not ENDLESS and x == 5:
        with open(os.environ["WF_ATTEMPTS"], "a") as f:
            f.write("attempt\\n")
        raise ERRORS[os.environ["WF_ERROR"]](f"bad record {x}")
    return x

flow = Dataflow("cli_job")
source = IterableSource(itertools.count() if ENDLESS else list(range(10)))
flow.source(source, name="numbers").map(check, name="check").sink(CollectSink(), name="out")
"""


def _run(
    tmp_path: Path, *args: str, error: str = "value", prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    env = dict(os.environ, WF_ATTEMPTS=str(tmp_path / "attempts"), WF_ERROR=error)
    cmd = [*prefix] or [sys.executable, "-m", "weirflow.cli"]
    return subprocess.run(
        [*cmd, "run", str(job), "--restart-delay=10ms", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _attempts(tmp_path: Path) -> int:
    path = tmp_path / "attempts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_unwritable_checkpoint_folder_fails_at_start(tmp_path: Path) -> None:
    """Scenario: --checkpoint-dir that this process cannot write: exit 2, one line, no worker."""
    if os.geteuid() == 0:
        # permissions do not stop root; nothing can be created under /proc
        folder = "/proc/weirflow-checkpoints"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        folder = str(tmp_path / "ro")
    out = _run(tmp_path, f"--checkpoint-dir={folder}")
    assert out.returncode == 2
    assert "is not writable" in _one_line(out.stderr)
    assert _attempts(tmp_path) == 0


def test_checkpoint_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    out = _run(tmp_path, f"--checkpoint-dir={tmp_path / 'a-file'}")
    assert out.returncode == 2
    assert "is not a folder" in _one_line(out.stderr)


def test_unknown_protocol_is_one_line(tmp_path: Path) -> None:
    out = _run(tmp_path, "--checkpoint-dir=nosuchproto://bucket/chk")
    assert out.returncode == 2
    assert "Protocol not known: nosuchproto" in _one_line(out.stderr)


def test_s3_without_s3fs_says_what_to_install(tmp_path: Path) -> None:
    """Scenario: s3fs cannot be imported (as in an install without the s3 extra)."""
    hide_s3fs = "import sys; sys.modules['s3fs'] = None; from weirflow.cli import main; main()"
    out = _run(
        tmp_path,
        "--checkpoint-dir=s3://bucket/chk",
        prefix=(sys.executable, "-c", hide_s3fs),
    )
    assert out.returncode == 2
    assert "pip install 'weirflow[s3]'" in _one_line(out.stderr)


def test_user_function_error_is_not_restarted(tmp_path: Path) -> None:
    """Scenario: a map raises ValueError under on_error="fail", 10 restarts allowed: exactly
    one attempt, exit 1, the error in one line."""
    out = _run(tmp_path, f"--checkpoint-dir={tmp_path / 'chk'}", "--max-restarts=10")
    assert out.returncode == 1, out.stderr
    assert _attempts(tmp_path) == 1
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "ValueError: bad record 5" in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_transient_failure_is_restarted(tmp_path: Path) -> None:
    """Scenario: the map raises ConnectionError every time, 2 restarts allowed: 3 attempts."""
    out = _run(
        tmp_path, f"--checkpoint-dir={tmp_path / 'chk'}", "--max-restarts=2", error="connection"
    )
    assert out.returncode == 1, out.stderr
    assert _attempts(tmp_path) == 3


def test_restore_latest_without_checkpoint_names_the_cli_option(tmp_path: Path) -> None:
    out = _run(tmp_path, f"--checkpoint-dir={tmp_path / 'chk'}", "--restore=latest")
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "run without --restore" in line and "restore=None" not in line


def test_summary_after_sigterm_says_stopped(tmp_path: Path) -> None:
    """Scenario: an endless job gets SIGTERM after its first checkpoint: exit 0, "stopped"."""
    job = tmp_path / "job.py"
    job.write_text(JOB)
    chk = tmp_path / "chk"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            str(job),
            f"--checkpoint-dir={chk}",
            "--checkpoint-interval=50ms",
        ],
        env=dict(os.environ, WF_ENDLESS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(chk.glob("cli_job/chk-*/_manifest")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "job cli_job: stopped" in stderr
    assert "finished" not in stderr


def test_unwritable_state_dir_fails_at_start(tmp_path: Path) -> None:
    """Scenario: --state-dir that cannot be created: exit 2, one line, no worker started."""
    folder = "/proc/weirflow-state" if os.geteuid() == 0 else str(tmp_path / "ro" / "state")
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
    out = _run(tmp_path, "--state-backend=rocksdb", f"--state-dir={folder}")
    assert out.returncode == 2
    assert "--state-dir" in _one_line(out.stderr)
    assert _attempts(tmp_path) == 0


def test_state_dir_without_rocksdb_is_one_line(tmp_path: Path) -> None:
    out = _run(tmp_path, f"--state-dir={tmp_path / 'state'}")
    assert out.returncode == 2
    assert "--state-dir needs --state-backend rocksdb" in _one_line(out.stderr)
