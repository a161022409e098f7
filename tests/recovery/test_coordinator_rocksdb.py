"""A RocksDB-backed job submitted to a standalone `weirflow coordinator`, its workers killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_helpers import (
    committed_results,
    completed_checkpoints,
    make_input,
    run_command,
    wait_for_checkpoints,
)

sys.path.insert(0, str(Path(__file__).parents[1]))
from standalone_cluster import standalone_cluster
from weirflow.checkpoint import CheckpointStorage, referenced_shared_files, resolve_job_key

pytestmark = pytest.mark.slow

N = 60_000


def _kill(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)


def test_rocksdb_state_of_a_submitted_job_survives_worker_kills(tmp_path: Path) -> None:
    """Scenario: windows in RocksDB (incremental checkpoints) of a job submitted to a
    coordinator with 2 workers of 2 slots; one worker SIGKILLed after checkpoint 2 and a
    replacement started, then the other SIGKILLed 3 checkpoints later: output exact, each
    restart restores a checkpoint, the workers kept state in the job's --state-dir, and the
    manifests name RocksDB's SST files in the shared folder."""
    log_dir, chk, state = tmp_path / "log", tmp_path / "chk", tmp_path / "state"
    expected = make_input(log_dir, N, seed=23)
    env = dict(os.environ, WF_LOG_DIR=str(log_dir), WF_THROTTLE_US="100")
    client_log = tmp_path / "client.log"
    with standalone_cluster(tmp_path, env, workers=2, slots=2) as cluster:
        submit = [
            *run_command(chk, "--state-backend=rocksdb", f"--state-dir={state}"),
            "--restart-delay=100ms",
            *cluster.join,
        ]
        with open(client_log, "wb") as out:
            client = subprocess.Popen(submit, env=env, stdout=out, stderr=out)
        try:
            wait_for_checkpoints(chk, 2)
            _kill(cluster.workers[1])
            cluster.start_worker()
            wait_for_checkpoints(chk, completed_checkpoints(chk)[-1] + 3)
            _kill(cluster.workers[0])
            assert client.wait(timeout=240) == 0, (
                f"{client_log.read_text()[-3000:]}\n{cluster.text()[-3000:]}"
            )
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    said = client_log.read_text()
    restores = said.count("starting from checkpoint")
    assert restores >= 2, f"{restores} restores from a checkpoint (the job ended first?)\n{said}"

    got = committed_results(log_dir)
    assert got == expected, f"missing {expected - got}, extra {got - expected}"

    databases = {p.name for p in (state / "windowed_sum").iterdir()}
    assert {"per_user-0", "per_user-1"} <= databases, databases
    key = resolve_job_key(None, str(chk), "windowed_sum", create=False).key
    shared = referenced_shared_files(CheckpointStorage(str(chk), "windowed_sum", key=key))
    assert any(p.endswith(".sst") for p in shared), f"no SST file in the manifests: {shared}"
    on_disk = {p.name for p in (chk / "windowed_sum" / "shared").rglob("*.sst")}
    assert {Path(p).name for p in shared} <= on_disk
