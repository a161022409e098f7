"""Deleting shared state files (``<job>/shared/``) that no retained checkpoint references.

Incremental checkpoints reference files in ``shared/`` that earlier
checkpoints uploaded. A shared file may be deleted exactly when no
completed checkpoint's manifest references it: the reference counts are
rebuilt from the retained manifests every time, never kept anywhere a crash
could leave them wrong. So:

* a crash between uploading files and writing the manifest leaves orphans
  (files no manifest names); the next collection deletes them;
* a crash while retention deletes a subsumed checkpoint (its manifest goes
  first) leaves its files unreferenced; the next collection deletes them;
* a file a retained checkpoint names is never deleted.

Collection runs when no checkpoint is pending (a pending checkpoint's new
files are in no manifest yet): at the start of a run, before the first
checkpoint, and after retention when nothing is in flight. A manifest that
fails verification stops the collection (its references are unknown).
"""

from __future__ import annotations

import logging

from weirflow.checkpoint.storage import CheckpointStorage
from weirflow.errors import CheckpointError

SHARED = "shared"
log = logging.getLogger("weirflow.checkpoint")


def referenced_shared_files(storage: CheckpointStorage) -> set[str]:
    """Return the ``shared/...`` paths (relative to the job folder) retained manifests name.

    Raises:
        CheckpointCorruptError: a retained manifest fails verification.
    """
    prefix = storage.root_url + "/"
    referenced: set[str] = set()
    for n in storage.completed_checkpoints():
        manifest = storage.load_manifest(n)
        for task in manifest.tasks.values():
            for handle in task.handles.values():
                path = handle.path[len(prefix) :] if handle.path.startswith(prefix) else handle.path
                if path.startswith(SHARED + "/"):
                    referenced.add(path)
    return referenced


def collect_shared_files(storage: CheckpointStorage) -> list[str]:
    """Delete the files under ``shared/`` that no retained checkpoint references.

    Call only while no checkpoint of the job is pending (see the module docs).

    Args:
        storage: the job's checkpoint storage.

    Returns:
        The deleted paths, relative to the job folder, sorted.

    Raises:
        CheckpointCorruptError: a retained manifest fails verification
            (nothing is deleted).
        CheckpointError: a deletion failed.
    """
    fs, root = storage.fs, storage.root
    try:
        found = fs.find(f"{root}/{SHARED}")
    except FileNotFoundError:
        return []
    if not found:
        # jobs without incremental state: no manifest needs reading
        return []
    referenced = referenced_shared_files(storage)
    doomed = []
    for path in found:
        relative = path[len(root) + 1 :] if path.startswith(root + "/") else path
        if relative.startswith(SHARED + "/") and relative not in referenced:
            doomed.append(relative)
    for relative in sorted(doomed):
        try:
            fs.rm_file(f"{root}/{relative}")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CheckpointError(f"cannot delete {storage.root_url}/{relative}: {e}") from e
    if doomed:
        log.debug("deleted %d unreferenced shared files of job %s", len(doomed), storage.job)
    return sorted(doomed)


def collect_shared_files_or_warn(storage: CheckpointStorage) -> None:
    """:func:`collect_shared_files`, logging instead of raising: a failed collection only
    postpones deleting garbage (an unreadable manifest, a failed deletion)."""
    try:
        collect_shared_files(storage)
    except CheckpointError as e:
        log.warning("collecting shared files of job %s failed: %s", storage.job, e)
