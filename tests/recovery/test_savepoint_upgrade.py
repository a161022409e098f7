"""Savepoints of a running ``weirflow run`` job: take one, stop with one, upgrade from a copy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input, run_command, wait_for_checkpoints

sys.path.insert(0, str(Path(__file__).parents[1]))
from standalone_cluster import standalone_cluster
from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig, CheckpointStorage, resolve_job_key

pytestmark = pytest.mark.slow

N = 60_000
JOB_V1 = str(Path(JOB).parent / "windowed_sum_v1.py")
JOB_V2 = str(Path(JOB).parent / "windowed_sum_v2.py")
# the users whose results the filter of the job's first version drops, of its next version
# (the filter changed), and of the operator the next version adds
DROPPED_V1 = frozenset(f"u{i}" for i in range(5))
DROPPED = frozenset(f"u{i}" for i in range(10))
ADDED_DROP = "u10"


def _env(log_dir: Path) -> dict[str, str]:
    return dict(os.environ, WF_LOG_DIR=str(log_dir), WF_THROTTLE_US="60")


def _weirflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weirflow.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _folder(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def test_stop_with_savepoint_then_upgrade_from_a_copy_at_parallelism_3(tmp_path: Path) -> None:
    """Scenario: savepoint of a running job, then stop with a savepoint; the job's next
    version (its filter changed, an operator added after it, its window state's Struct
    gaining a field with a default) restores a copy of it elsewhere at parallelism 3:
    output = old code's output up to the switch point + new code's output from there on."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, N, 5)
    env = _env(log_dir)
    with open(tmp_path / "run.log", "wb") as log:
        v1 = run_command(chk, "--unaligned")
        v1[v1.index(JOB)] = JOB_V1
        sup = subprocess.Popen(v1, env=env, stdout=log, stderr=log)
        try:
            wait_for_checkpoints(chk, 2)
            taken = _weirflow("savepoint", "windowed_sum", f"--checkpoint-dir={chk}", env=env)
            assert taken.returncode == 0, taken.stderr
            default = _folder(taken.stdout.strip())
            assert default.parent == chk / "windowed_sum" / "savepoints"
            stopped = _weirflow(
                "stop",
                "windowed_sum",
                f"--checkpoint-dir={chk}",
                "--savepoint",
                f"--into={tmp_path / 'sp'}",
                env=env,
            )
            assert stopped.returncode == 0, stopped.stderr
            assert _folder(stopped.stdout.strip()) == tmp_path / "sp"
            assert sup.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()[-3000:]
        finally:
            if sup.poll() is None:
                sup.kill()
    before = committed_results(log_dir)
    expected_v1 = Counter({r: n for r, n in expected.items() if r[0] not in DROPPED_V1})
    assert before - expected_v1 == Counter(), "the stopped run committed a wrong or a duplicate"
    assert sum(before.values()) < sum(expected_v1.values()), "the stop came too late to test"
    listed = _weirflow("checkpoints", "list", "--job=windowed_sum", f"--checkpoint-dir={chk}")
    assert listed.returncode == 0, listed.stderr
    assert default.name in listed.stdout, "checkpoints list does not show the savepoint"
    assert (default / "_manifest").is_file(), "retention deleted a savepoint"

    moved = tmp_path / "elsewhere" / "moved-sp"
    shutil.copytree(tmp_path / "sp", moved)
    shutil.rmtree(tmp_path / "sp")
    cmd = run_command(chk, f"--restore={moved}")
    cmd[cmd.index(JOB)] = JOB_V2
    cmd[cmd.index("--parallelism=2")] = "--parallelism=3"
    upgraded = subprocess.run(
        cmd, env=dict(env, WF_STATE_VERSION="2"), capture_output=True, text=True, timeout=120
    )
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    after = committed_results(log_dir) - before
    # the results the old code had not committed, as the new code filters them
    want = Counter(
        {r: n for r, n in (expected - before).items() if r[0] not in DROPPED | {ADDED_DROP}}
    )
    assert sum(want.values()) > 0
    assert after == want


def test_a_corrupt_savepoint_is_refused_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: one state file of a savepoint is damaged: the restore is refused, naming it."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    make_input(log_dir, 2_000, 6)
    env = dict(_env(log_dir), WF_THROTTLE_US="0")
    monkeypatch.setenv("WF_LOG_DIR", str(log_dir))
    load_dataflow(JOB).run(2, checkpoint=CheckpointConfig(storage=str(chk)), restore="none")
    key = resolve_job_key(None, str(chk), "windowed_sum", create=False).key
    storage = CheckpointStorage(str(chk), "windowed_sum", key=key)
    latest = storage.completed_checkpoints()[-1]
    url = storage.write_savepoint(storage.load_manifest(latest), str(tmp_path / "sp"))
    state_files = sorted(
        p for p in _folder(url).rglob("*") if p.is_file() and p.name != "_manifest"
    )
    victim = state_files[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    refused = subprocess.run(
        run_command(chk, f"--restore={tmp_path / 'sp'}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert victim.name in refused.stderr and "Traceback" not in refused.stderr


def test_rescale_a_job_on_two_workers_from_2_to_3(tmp_path: Path) -> None:
    """Scenario: `weirflow rescale` of a job on 2 worker processes: stop with a savepoint,
    relaunch with the same arguments at parallelism 3; the output is exact."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, N, 7)
    env = _env(log_dir)
    with open(tmp_path / "run.log", "wb") as log:
        sup = subprocess.Popen(
            [*run_command(chk), "--workers=2"], env=env, stdout=log, stderr=log, cwd=tmp_path
        )
        try:
            wait_for_checkpoints(chk, 2)
            rescaled = _weirflow(
                "rescale", "windowed_sum", "--parallelism=3", f"--checkpoint-dir={chk}", env=env
            )
            assert rescaled.returncode == 0, rescaled.stderr
            assert sup.wait(timeout=60) == 0, (tmp_path / "run.log").read_text()[-3000:]
        finally:
            if sup.poll() is None:
                sup.kill()
    assert "rescaled to parallelism 3" in rescaled.stdout and "downtime" in rescaled.stdout
    assert "windowed_sum: stopped" in (tmp_path / "run.log").read_text(), "rescaled too late"
    _wait_for_exit(int(rescaled.stdout.split("process ")[1].split()[0]))
    assert committed_results(log_dir) == expected


def _wait_for_exit(pid: int) -> None:
    """Wait for the relaunched job's process (not this process's child) to end."""
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid):
        assert time.monotonic() < deadline, f"the relaunched job's process {pid} did not end"
        time.sleep(0.05)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "Z"


def _resume_after_stop(
    log_dir: Path, expected: Counter, resume: list[str], join: list[str], env: dict[str, str]
) -> None:
    """Check what the stopped run committed (a part of ``expected``, nothing twice), then
    submit ``resume`` (a ``weirflow run`` restoring the stop's savepoint) to the cluster."""
    before = committed_results(log_dir)
    assert before - expected == Counter(), "a wrong or duplicate result committed"
    assert sum(before.values()) < sum(expected.values()), "the stop came too late"
    resumed = subprocess.run([*resume, *join], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_rescale_and_stop_a_job_submitted_to_a_coordinator_then_resume(tmp_path: Path) -> None:
    """Scenario: a job submitted to a standalone `weirflow coordinator` (one worker, 2 slots)
    is rescaled 2 -> 1 and then stopped with a savepoint, both through the endpoint the
    coordinator opens for each job: each client exits 0 with every sink committed; the job
    submitted again from the savepoint ends with the batch answer, nothing missing, nothing
    twice."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, N, 9)
    env = _env(log_dir)
    relaunched: int | None = None
    with standalone_cluster(tmp_path, env, workers=1, slots=2) as cluster:
        join, log = cluster.join, cluster.out
        try:
            client = subprocess.Popen([*run_command(chk), *join], env=env, stdout=log, stderr=log)
            try:
                wait_for_checkpoints(chk, 2)
                rescaled = _weirflow(
                    "rescale", "windowed_sum", "--parallelism=1", f"--checkpoint-dir={chk}",
                    env=env,
                )  # fmt: skip
                assert rescaled.returncode == 0, rescaled.stderr
                relaunched = int(rescaled.stdout.split("process ")[1].split()[0])
                assert client.wait(timeout=60) == 0, (tmp_path / "cluster.log").read_text()[-3000:]
            finally:
                if client.poll() is None:
                    client.kill()
            assert "windowed_sum: stopped" in (tmp_path / "cluster.log").read_text()
            rescaled_from = int(rescaled.stdout.split("savepoint-")[1].split(";")[0])
            wait_for_checkpoints(chk, rescaled_from + 1)
            stopped = _weirflow(
                "stop", "windowed_sum", f"--checkpoint-dir={chk}", "--savepoint",
                f"--into={tmp_path / 'sp'}", env=env,
            )  # fmt: skip
            assert stopped.returncode == 0, stopped.stderr
            assert _folder(stopped.stdout.strip()) == tmp_path / "sp"
            _wait_for_exit(relaunched)
            _resume_after_stop(
                log_dir, expected, run_command(chk, f"--restore={tmp_path / 'sp'}"), join, env
            )
        finally:
            if relaunched is not None and _proc_state(relaunched) != "Z":
                os.kill(relaunched, signal.SIGKILL)
    assert committed_results(log_dir) == expected


def test_sigterm_to_a_coordinator_client_stops_with_a_savepoint_then_resume(
    tmp_path: Path,
) -> None:
    """Scenario: SIGTERM to the client that submitted a job with checkpoints to a standalone
    coordinator stops the job with a savepoint into the default folder (as under `weirflow
    run`'s supervisor): the client exits 0 and names the folder; the job submitted again
    from that savepoint ends with the batch answer, nothing missing, nothing twice."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, N, 11)
    env = _env(log_dir)
    with standalone_cluster(tmp_path, env, workers=1, slots=2) as cluster:
        join = cluster.join
        with open(tmp_path / "client.log", "wb") as client_log:
            client = subprocess.Popen(
                [*run_command(chk), *join], env=env, stdout=client_log, stderr=client_log
            )
        try:
            wait_for_checkpoints(chk, 2)
            client.send_signal(signal.SIGTERM)
            assert client.wait(timeout=60) == 0, (tmp_path / "client.log").read_text()[-3000:]
        finally:
            if client.poll() is None:
                client.kill()
        said = (tmp_path / "client.log").read_text()
        assert "stop savepoint written to " in said, said[-3000:]
        folder = _folder(said.split("stop savepoint written to ")[1].split()[0])
        assert folder.parent == chk / "windowed_sum" / "savepoints"
        assert (folder / "_manifest").is_file()
        _resume_after_stop(log_dir, expected, run_command(chk, f"--restore={folder}"), join, env)
    assert committed_results(log_dir) == expected
