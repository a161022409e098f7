"""``weirflow run`` refuses the two ordinary ways of committing output twice.

1. Restoring with ``--restore latest`` when the newest checkpoint is unusable falls
   back to an older one, whose replay would commit again what the newer checkpoint's
   sink transactions already committed.
2. Running a job again without ``--restore`` over its checkpoints would start fresh
   and commit every result again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import (
    committed_results,
    completed_checkpoints,
    make_input,
    run_command,
    wait_for_checkpoints,
)

pytestmark = pytest.mark.slow


def _env(log_dir: Path, throttle_us: int) -> dict[str, str]:
    return dict(os.environ, WF_LOG_DIR=str(log_dir), WF_THROTTLE_US=str(throttle_us))


def test_fallback_to_an_older_checkpoint_is_refused_unless_duplicates_are_allowed(
    tmp_path: Path,
) -> None:
    """Scenario: stop after 3+ checkpoints, damage the newest manifest, --restore latest
    → exit 2 naming the checkpoints, the count and the option; with the option the run
    finishes and writes exactly that many results twice."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, 60_000, 21)
    env = _env(log_dir, throttle_us=40)
    with open(tmp_path / "run.log", "wb") as log:
        sup = subprocess.Popen(run_command(chk), env=env, stdout=log, stderr=log)
        wait_for_checkpoints(chk, 3)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()
    before = committed_results(log_dir)
    assert sum(before.values()) < sum(expected.values()), "the stop came too late to test"
    newest = completed_checkpoints(chk)[-1]
    manifest = chk / "windowed_sum" / f"chk-{newest}" / "_manifest"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    fallback = completed_checkpoints(chk)[-2]

    refused = subprocess.run(
        run_command(chk, "--restore=latest"), env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"restoring checkpoint {fallback} " in message
    span = (
        f"checkpoint {newest}"
        if newest == fallback + 1
        else f"checkpoints {fallback + 1}..{newest}"
    )
    assert f"for {span}" in message
    assert "--allow-duplicates-after-fallback" in message
    assert "Traceback" not in refused.stderr
    assert committed_results(log_dir) == before, "a refused restore committed output"
    found = re.search(r"commits again the ([\d,]+) records", message)
    assert found is not None, message
    predicted = int(found.group(1).replace(",", ""))
    assert predicted > 0

    allowed = subprocess.run(
        run_command(chk, "--restore=latest", "--allow-duplicates-after-fallback"),
        env=_env(log_dir, throttle_us=0),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    after = committed_results(log_dir)
    assert expected - after == Counter(), "a result is missing after the fallback"
    duplicates = after - expected
    assert sum(duplicates.values()) == predicted
    assert duplicates - before == Counter(), "only results committed before can repeat"


def test_running_again_without_restore_is_refused_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    """Scenario: a bounded job runs to its end; the same command again exits 2 naming
    --restore latest and --fresh and commits nothing; --restore latest then adds nothing,
    and --fresh reprocesses everything on purpose."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, 20_000, 22)
    env = _env(log_dir, throttle_us=0)
    first = subprocess.run(run_command(chk), env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert committed_results(log_dir) == expected
    checkpoints = completed_checkpoints(chk)

    again = subprocess.run(run_command(chk), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2, again.stderr
    message = " ".join(again.stderr.split())
    assert "--restore latest" in message and "--fresh" in message
    assert f"chk-{checkpoints[-1]}" in message
    assert "Traceback" not in again.stderr
    assert committed_results(log_dir) == expected
    assert completed_checkpoints(chk) == checkpoints, "the refused run wrote a checkpoint"

    resumed = subprocess.run(
        run_command(chk, "--restore=latest"), env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert committed_results(log_dir) == expected

    fresh = subprocess.run(
        run_command(chk, "--fresh"), env=env, capture_output=True, text=True, timeout=300
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert committed_results(log_dir) == expected + expected
    assert completed_checkpoints(chk)[-1] > checkpoints[-1], "fresh ids follow the old ones"
