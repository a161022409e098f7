"""Incremental checkpoints of RocksDB state: uploading a snapshot's files, and getting them back.

Files are streamed in chunks both ways (never read whole into memory),
their SHA-256 computed on the way for the manifest.

Upload (the asynchronous part of a checkpoint): every file of a
:class:`~weirflow.state.FilesSnapshot` becomes a state handle of the task,
named ``<operator>#<file>``. Immutable SST files go once into the job's
``shared/<instance>/<file>``; a file an earlier completed checkpoint of the
same database uploaded is referenced again, not uploaded. The small
metadata files go into the checkpoint's own folder.

Download (restore): the files of one old subtask are written into a local
folder, each verified (checksum, signature) as it is read. With local
recovery, a file whose local copy (kept by the subtask that wrote it, under
``local_dir``) has the checksum the manifest records is taken from there
instead of from checkpoint storage.

Shared files are deleted by :meth:`~weirflow.checkpoint.CheckpointStorage.collect_shared_files`
once no retained checkpoint references them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weirflow.checkpoint import (
    CheckpointStorage,
    StateHandle,
    TaskSnapshot,
    checksum_of_file,
    state_file_name,
)
from weirflow.runtime.local_digests import (
    available,
    both_digests,
    fast_digest,
    recorded_fast_digest,
    remember,
    remember_file,
    write_digests,
)
from weirflow.state import (
    FilesSnapshot,
    RestoredFiles,
    RocksDBStateBackend,
    StateBackend,
    link_or_copy,
)

FILE_SEPARATOR = "#"
"""Between the operator's name and a file's name in a task's handle names."""

log = logging.getLogger("weirflow.checkpoint")


def upload_files(
    storage: CheckpointStorage,
    checkpoint_id: int,
    task_prefix: str,
    operator: str,
    snapshot: FilesSnapshot,
) -> dict[str, StateHandle]:
    """Upload what the checkpoint needs of ``snapshot``'s files.

    Args:
        storage: the checkpoint storage.
        checkpoint_id: the checkpoint.
        task_prefix: the task's id (with the attempt), for private file names.
        operator: the operator's name.
        snapshot: the local RocksDB checkpoint.

    Returns:
        ``<operator>#<file>`` -> handle, for every file of the snapshot.

    Raises:
        CheckpointError: a write failed, or a local file vanished (the subtask
            was closed meanwhile).
    """
    handles: dict[str, StateHandle] = {}
    checksums: dict[str, str] = {}
    uploaded: set[str] = set()
    for name in sorted(snapshot.files):
        if name in snapshot.shared:
            handle = snapshot.reused.get(name)
            if handle is None:
                handle = storage.write_shared_state_file(
                    f"{snapshot.instance}/{name}", snapshot.directory / name
                )
                snapshot.on_uploaded(name, handle)
                uploaded.add(name)
        else:
            handle = storage.write_state_file(
                checkpoint_id,
                state_file_name(task_prefix, f"{operator}.{name}"),
                snapshot.directory / name,
            )
            uploaded.add(name)
        handles[f"{operator}{FILE_SEPARATOR}{name}"] = handle
        checksums[name] = handle.checksum
    write_digests(snapshot.directory, checksums, frozenset(uploaded))
    return handles


def files_of(operator: str, handles: Mapping[str, StateHandle]) -> dict[str, StateHandle]:
    """Return ``file name -> handle`` of ``operator``'s files among a task's handles."""
    prefix = operator + FILE_SEPARATOR
    return {k[len(prefix) :]: h for k, h in handles.items() if k.startswith(prefix)}


def download_files(
    storage: CheckpointStorage,
    files: Mapping[str, StateHandle],
    key_group_range: tuple[int, int],
    target: Path,
    local_copy: Path | None = None,
) -> RestoredFiles:
    """Fetch one old subtask's RocksDB checkpoint into ``target``.

    Args:
        storage: the checkpoint storage.
        files: file name -> handle.
        key_group_range: the key groups the files hold.
        target: an empty local folder to fill.
        local_copy: the folder where the subtask that wrote the checkpoint
            kept its files (local recovery), or ``None``.

    Returns:
        A :class:`~weirflow.state.RestoredFiles` for the restore.

    Raises:
        CheckpointCorruptError: a file fails verification in storage.
        OSError: ``target`` cannot be written.
    """
    target.mkdir(parents=True, exist_ok=True)
    local_hits = 0
    local = _verify_all(local_copy, files) if local_copy is not None else set()
    for name, handle in sorted(files.items()):
        if local_copy is not None and name in local:
            # SST files never change once written: a hard link copies them for free
            link_or_copy(local_copy / name, target / name, link=name.endswith(".sst"))
            local_hits += 1
            continue
        storage.read_state_into(handle, target / name)
        remember_file(handle.checksum, target / name)
    if local_copy is not None:
        log.info(
            "local recovery from %s: %d of %d files taken locally",
            local_copy,
            local_hits,
            len(files),
        )
    # only files in this job's own shared/ folder are referenced again by later checkpoints
    # (not those of a savepoint, whose folder the job does not own)
    own = storage.root_url + "/shared/"
    shared = {
        name: h
        for name, h in files.items()
        if h.path.startswith(own) or h.path.startswith("shared/")
    }
    return RestoredFiles(target, key_group_range, shared)


def _verify_all(folder: Path, files: Mapping[str, StateHandle]) -> set[str]:
    """Names of ``files`` whose copy in ``folder`` has the manifest's checksum.

    The files are hashed on several threads: ``hashlib`` releases the GIL
    while it hashes, so a restore of many SST files uses every core.
    """
    names = sorted(files)
    workers = min(len(names), os.cpu_count() or 1)
    if workers <= 1:
        return {n for n in names if _matches(folder / n, files[n])}
    with ThreadPoolExecutor(workers, thread_name_prefix="verify-local") as pool:
        found = pool.map(lambda n: _matches(folder / n, files[n]), names)
        return {n for n, ok in zip(names, found, strict=True) if ok}


_verified: dict[tuple[str, int, int, int, str], tuple[float, bool]] = {}
_verified_lock = threading.Lock()
_VERIFIED_LIMIT = 100_000
_VERIFIED_FOR_S = 60.0


def _matches(path: Path, handle: StateHandle) -> bool:
    """Whether the local file has the content the manifest records (its SHA-256).

    The file is hashed in chunks, never read whole into memory: with XXH3
    when its folder's digests file pairs the manifest's SHA-256 with one
    (:mod:`.local_digests`), else with SHA-256. A verdict is remembered per
    file identity (inode, size, modification time) and checksum for a
    minute, so the check made while choosing the checkpoint to restore and
    the one made by the restore itself hash each file once; a file rewritten
    in the meantime gets a new identity and is hashed again, and a later
    restore hashes everything again (a disk can rot in place).
    """
    try:
        stat = path.stat()
        identity = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, handle.checksum)
        with _verified_lock:
            known = _verified.get(identity)
        if known is not None and time.monotonic() - known[0] < _VERIFIED_FOR_S:
            return known[1]
        recorded = recorded_fast_digest(path.parent, path.name, handle.checksum)
        if recorded is not None:
            ok = fast_digest(path) == recorded
            if ok:
                remember(handle.checksum, recorded)
        elif available():
            checksum, fast = both_digests(path)
            ok = checksum == handle.checksum
            if ok:
                remember(checksum, fast)
        else:
            ok = checksum_of_file(path) == handle.checksum
    except OSError:
        return False
    with _verified_lock:
        if len(_verified) >= _VERIFIED_LIMIT:
            _verified.clear()
        _verified[identity] = (time.monotonic(), ok)
    return ok


def local_copies_of(backend: StateBackend, job: str) -> Callable[[str, int, int], Path | None]:
    """Return where ``backend`` keeps local copies of checkpoints (local recovery), if anywhere."""
    if isinstance(backend, RocksDBStateBackend):
        return lambda operator, subtask, n: backend.local_checkpoint(job, operator, subtask, n)
    return lambda operator, subtask, n: None


def local_verifier(
    local_copies: Callable[[str, int, int], Path | None],
) -> Callable[[int, TaskSnapshot, str, StateHandle], bool]:
    """Return a check that a task's RocksDB file has a local copy with the manifest's checksum.

    For ``CheckpointStorage.set_local_verifier``: choosing a checkpoint to
    restore then reads none of the files local recovery will take locally.
    """

    def verified(checkpoint_id: int, task: TaskSnapshot, name: str, handle: StateHandle) -> bool:
        operator, sep, file = name.partition(FILE_SEPARATOR)
        subtask = task.metadata.get("subtask")
        if not sep or type(subtask) is not int:
            return False
        local = local_copies(operator, subtask, checkpoint_id)
        return local is not None and _matches(local / file, handle)

    return verified
