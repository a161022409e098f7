"""``weirflow demo flights`` refuses bad options before it touches the event log."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from weirflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize("workers", ["0", "-1", "many"])
def test_a_bad_worker_count_is_one_line_and_ingests_nothing(tmp_path: Path, workers: str) -> None:
    log_dir = tmp_path / "log"
    result = runner.invoke(app, ["demo", "flights", f"--log-dir={log_dir}", f"--workers={workers}"])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert f"--workers takes a count ≥ 1 or 'auto', got '{workers}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not log_dir.exists()
