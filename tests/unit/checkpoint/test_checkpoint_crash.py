"""Checkpointing processes killed with SIGKILL at arbitrary points leave only usable checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from weirflow.checkpoint import CheckpointStorage

# The child runs a coordinator with three tasks and a logical clock, writing
# 256 KiB per task so that a kill is likely to land mid-checkpoint, and prints
# each completed id. Retention (2) runs inside acknowledge.
CHILD = r"""
import itertools, sys
from datetime import timedelta
from weirflow.checkpoint import (CheckpointConfig, CheckpointCoordinator, CheckpointStorage,
    TaskSnapshot, state_file_name)

root, restore = sys.argv[1], sys.argv[2]
storage = CheckpointStorage(root, "job")
restored = storage.resolve_restore(restore)
first = restored.checkpoint_id + 1 if restored else 1
tasks = ["src[0/2]", "src[1/2]", "sink[0/1]"]
ticks = itertools.count()
coord = CheckpointCoordinator(CheckpointConfig(storage=root, retained=2), storage, tasks,
    lambda: next(ticks), parallelism=2, max_parallelism=128, first_checkpoint_id=first)
payload = bytes(range(256)) * 1024
while True:
    n = coord.trigger_now()
    for task in tasks:
        handle = storage.write_state(n, state_file_name(task, "keyed"), payload + b"%d" % n)
        done = coord.acknowledge(n, TaskSnapshot(task, {"keyed": handle}, {"id": n}))
    print(done.checkpoint_id, flush=True)
"""


def run_until(root: Path, restore: str, completions: int) -> list[int]:
    """Start the child, SIGKILL it right after its ``completions``-th completed checkpoint."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), restore],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(int(line))
            if len(seen) == completions:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"child ended with {proc.returncode}"
    return seen


@pytest.mark.slow
def test_sigkill_mid_checkpoint_leaves_only_usable_checkpoints(tmp_path: Path) -> None:
    """Scenario: a checkpointing process is SIGKILLed repeatedly and resumed from 'latest'."""
    storage = CheckpointStorage(str(tmp_path), "job")
    restored_ids: list[int] = []
    corrupt: list[str] = []
    last_seen = 0
    for round_, completions in enumerate((3, 1, 4)):
        seen = run_until(tmp_path, "latest" if round_ else "latest-or-fresh", completions)
        assert seen[0] > last_seen, "ids must keep increasing across restarts"
        last_seen = seen[-1]
        latest = storage.latest_valid(lambda path, e: corrupt.append(f"{path}: {e}"))
        assert corrupt == []
        assert latest is not None and latest.checkpoint_id >= seen[-1]
        assert latest.tasks["sink[0/1]"].metadata == {"id": latest.checkpoint_id}
        assert len(storage.completed_checkpoints()) <= 3
        restored_ids.append(latest.checkpoint_id)
    assert restored_ids == sorted(restored_ids)
    storage.apply_retention(2)
    newest = storage.completed_checkpoints()
    assert len(newest) == 2
    # Folders of checkpoints cut short by a kill are gone once a newer one completed.
    leftovers = {p.name for p in (tmp_path / "job").iterdir()}
    assert {f"chk-{n}" for n in newest} <= leftovers
    assert all(int(name[4:]) > newest[-1] for name in leftovers - {f"chk-{n}" for n in newest})
