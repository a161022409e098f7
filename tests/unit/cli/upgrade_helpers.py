"""Shared by the ``weirflow upgrade-check`` tests: a finished job's savepoint."""

from __future__ import annotations

from pathlib import Path

from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig, CheckpointStorage, resolve_job_key


def run_to_savepoint(job: Path, chk: Path, into: Path) -> None:
    """Run ``job`` to its end at parallelism 2 with checkpoints under ``chk``, then copy its
    last checkpoint into a savepoint at ``into``.

    Args:
        job: the job file.
        chk: the checkpoint storage folder.
        into: the savepoint folder to write.
    """
    flow = load_dataflow(str(job))
    flow.run(2, checkpoint=CheckpointConfig(storage=str(chk)), restore="none")
    key = resolve_job_key(None, str(chk), flow.name, create=False).key
    storage = CheckpointStorage(str(chk), flow.name, key=key)
    last = storage.completed_checkpoints()[-1]
    storage.write_savepoint(storage.load_manifest(last), str(into))


def savepoint_of(root: Path, text: str) -> tuple[Path, Path]:
    """Write job ``text`` as ``root/v1/shop.py`` and run it to a savepoint at ``root/sp``.

    Args:
        root: an empty folder.
        text: the job's first version (its file name, so its module, stays ``shop``).

    Returns:
        ``(root, checkpoint folder)``.
    """
    (root / "v1").mkdir()
    (root / "v1" / "shop.py").write_text(text)
    run_to_savepoint(root / "v1" / "shop.py", root / "chk", root / "sp")
    return root, root / "chk"
