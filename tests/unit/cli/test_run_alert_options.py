"""`weirflow run --alert` and `--autoscale` (bad values) and `--ray-detached` and `--ray-wait`
(misplaced): refused in one line, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from weirflow.cli import app
from weirflow.cli.run_options import parse_alert
from weirflow.metrics import Signal


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alert=lagg>5"], "NAME one of lag, lag_records"),
        (["--alert=lag>5"], "'5' is not a duration"),
        (["--alert=dead_letters>1s"], "dead_letters takes a whole number"),
        (["--alert-webhook=http://127.0.0.1:9/"], "needs at least one --alert"),
        (["--alert=restarts>0", "--alert-webhook=ftp://x"], "http:// or https://"),
        (["--alert=lag>5m", "--workers=2", "--parallelism=2"], "lag_records, dead_letters"),
        (["--alert=lag>5m", "--coordinator=127.0.0.1:9"], "lag_records, dead_letters"),
        (["--alert=lag>5m", "--ray=auto", "--ray-detached"], "lag_records, dead_letters"),
        # --autoscale goes with --ray-detached (its coordinator actor rescales): what is
        # refused here is the port
        (
            [
                "--autoscale=min=1,max=2,target-lag=5s",
                "--ray=auto",
                "--ray-detached",
                "--metrics-port=9100",
            ],
            "--metrics-port and --ui-port are served by a coordinator in this process",
        ),
        (["--autoscale=min=1,max=4"], "min, max and target-lag are needed"),
        (["--autoscale=min=1,max=4,target-lag=5"], "is not a duration"),
        (["--autoscale=min=2,max=4,target-lag=5s"], "outside --autoscale min=2 max=4"),
        (["--autoscale=min=1,max=2,target-lag=5s", "--guarantee=at_most_once"], "at_most_once"),
        (["--autoscale=lots"], "write min=1,max=N,target-lag=30s"),
        (["--ray-detached"], "--ray-detached goes with --ray ADDRESS"),
        (["--ray=auto", "--ray-wait"], "--ray-wait with both"),
        (["--ray=auto", "--ray-detached", "--metrics-port=9100"], "not with --ray-detached"),
    ],
)
def test_bad_alert_and_autoscale_options_are_refused_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = CliRunner().invoke(
        app, ["run", str(tmp_path / "job.py"), f"--checkpoint-dir={tmp_path}", *args]
    )
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())
    assert "Traceback" not in done.output


def test_conditions_parse_into_thresholds_in_ms_or_counts() -> None:
    lag = parse_alert("lag>5m")
    assert (lag.signal, lag.threshold, lag.text) == (Signal.LAG, 300_000, "lag>5m")
    assert parse_alert(" dead_letters > 0 ").threshold == 0
    assert parse_alert("checkpoint_age>1500ms").threshold == 1500
