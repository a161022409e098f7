"""`weirflow run` options: JSON logs; no dashboard beyond loopback without a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recovery"))

from chaos_helpers import JOB, make_input


def weirflow_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            JOB,
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--checkpoint-interval=100ms",
            *args,
        ],
        env=dict(os.environ, WF_LOG_DIR=str(tmp_path / "log")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_json_log_format_emits_only_json_lines(tmp_path: Path) -> None:
    make_input(tmp_path / "log", 3_000, seed=5)
    done = weirflow_run(tmp_path, "--log-format=json", "--parallelism=2")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records, "no log lines"
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    (finished,) = [r for r in records if r["message"] == "finished"]
    ops = finished["operators"]
    assert ops["events"]["records_in"] == 3_000
    assert ops["parse"]["records_in"] == ops["parse"]["records_out"] == 3_000
    assert finished["checkpoints_completed"] >= 1
    assert any(r["message"].startswith("checkpoint ") for r in records)


def test_dashboard_beyond_loopback_without_token_is_refused(tmp_path: Path) -> None:
    make_input(tmp_path / "log", 10, seed=5)
    env_token = os.environ.pop("WEIRFLOW_UI_TOKEN", None)
    try:
        done = weirflow_run(tmp_path, "--ui-port=1", "--ui-host=0.0.0.0")
    finally:
        if env_token is not None:
            os.environ["WEIRFLOW_UI_TOKEN"] = env_token
    assert done.returncode == 2
    assert "--ui-token" in done.stderr
