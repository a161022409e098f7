"""Checkpoints and savepoints of one job: manifests, retention and the restore choice.

Layout under the storage root::

    <root>/<job>/chk-<n>/_manifest     the manifest; its presence makes checkpoint n completed
    <root>/<job>/chk-<n>/<name>        state files of checkpoint n
    <root>/<job>/shared/<name>         state files reused by several checkpoints
    <root>/<job>/savepoints/...        default savepoint folders (never deleted here)

Savepoints are self-contained folders (``_manifest`` plus copies of every
state file, paths relative to the folder) that can be moved anywhere.

Writing and reading the state files themselves, signed under the job's
checkpoint key, is :class:`.state_files.StateFiles`'s, which
:class:`CheckpointStorage` extends; without a key its callers must never
unpickle what it reads (``authenticated``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor

import fsspec

from weirflow.checkpoint.errors import (
    CheckpointConflictError,
    CheckpointCorruptError,
    NoCheckpointError,
)
from weirflow.checkpoint.fs import open_durable, open_fs, put_exclusive
from weirflow.checkpoint.handles import StateHandle, TaskSnapshot
from weirflow.checkpoint.manifest import Manifest
from weirflow.checkpoint.state_files import StateFiles
from weirflow.errors import CheckpointError

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest"
#: The ``restore`` value that starts a job fresh on purpose, over earlier checkpoints.
FRESH = "none"
_CHK_DIR = re.compile(r"chk-(\d+)")

OnCorrupt = Callable[[str, Exception], None]
"""Called with ``(path, error)`` for each checkpoint skipped as unusable."""


LocalVerifier = Callable[[int, TaskSnapshot, str, StateHandle], bool]
"""Whether a state file of a checkpoint has a verified local copy (see ``set_local_verifier``)."""


class CheckpointStorage(StateFiles):
    """Reads and writes one job's checkpoints under a folder or fsspec URL.

    State files are written and read as in :class:`.state_files.StateFiles`;
    this class adds manifests (completing a checkpoint), listing and
    verification, retention, savepoints and the restore choice.

    Args and errors are :class:`.state_files.StateFiles`'s: ``url`` (a local folder
    or fsspec URL), ``job`` (the folder under it), ``storage_options`` and ``key``.
    """

    _local_verifier: LocalVerifier | None = None

    def checkpoint_url(self, checkpoint_id: int) -> str:
        """Return the URL of checkpoint ``checkpoint_id``'s folder."""
        return self.fs.unstrip_protocol(self._chk_dir(checkpoint_id))

    def _chk_dir(self, checkpoint_id: int) -> str:
        return f"{self.root}/chk-{checkpoint_id}"

    # -- manifests -----------------------------------------------------------

    def commit_manifest(self, manifest: Manifest) -> None:
        """Write the manifest of a checkpoint atomically and exclusively, completing it.

        Handle paths under the job folder are stored relative to it.

        Args:
            manifest: the checkpoint's manifest, for this storage's job.

        Raises:
            CheckpointConflictError: ``chk-<n>`` already has a manifest (another
                writer completed checkpoint n); nothing is changed.
            CheckpointError: the manifest is for another job, or the write failed.
        """
        if manifest.job != self.job:
            raise CheckpointError(
                f"manifest of job {manifest.job!r} cannot be committed to job {self.job!r}"
            )
        path = f"{self._chk_dir(manifest.checkpoint_id)}/{MANIFEST_NAME}"
        data = manifest.map_handles(self._relative_to_root).to_bytes(self._key)
        try:
            created = put_exclusive(self.fs, path, data)
        except OSError as e:
            raise CheckpointError(
                f"cannot write manifest {self.fs.unstrip_protocol(path)}: {e}"
            ) from e
        if not created:
            raise CheckpointConflictError(
                f"checkpoint {manifest.checkpoint_id} of job {self.job!r} already has a manifest "
                f"at {self.fs.unstrip_protocol(path)}: another coordinator completed it; make "
                "sure only one attempt of the job runs"
            )

    def load_manifest(self, checkpoint_id: int) -> Manifest:
        """Load and verify the manifest of a completed checkpoint.

        Args:
            checkpoint_id: the checkpoint's id.

        Returns:
            The manifest, its handle paths as absolute URLs.

        Raises:
            CheckpointError: checkpoint ``checkpoint_id`` has no manifest.
            CheckpointCorruptError: the manifest fails verification.
        """
        return self._load_at(self.fs, self._chk_dir(checkpoint_id))

    def _load_at(self, fs: fsspec.AbstractFileSystem, folder: str) -> Manifest:
        path = f"{folder}/{MANIFEST_NAME}"
        try:
            data = fs.cat_file(path)
        except FileNotFoundError as e:
            raise CheckpointError(
                f"no manifest at {fs.unstrip_protocol(path)}: not a completed checkpoint or "
                "savepoint (expected a chk-<n> folder, its _manifest file, or a savepoint folder)"
            ) from e
        manifest = Manifest.from_bytes(data, fs.unstrip_protocol(path), self._key)
        # A checkpoint's relative paths start at the job folder, a savepoint's at its own.
        base = folder if manifest.is_savepoint else posixpath.dirname(folder)
        base_url = fs.unstrip_protocol(base)
        return manifest.map_handles(lambda h: _rebased(h, base_url))

    def verify(self, manifest: Manifest) -> None:
        """Read and verify every state file of ``manifest``.

        A file the local verifier (:meth:`set_local_verifier`) confirms is not
        read: restore takes it from the local copy, which matched its checksum.
        Files are checked on one thread per core, largest first: hashing
        releases the GIL, and a RocksDB checkpoint is many files of up to
        tens of MB, which one thread would hash at under 2 GB/s.

        Raises:
            CheckpointCorruptError: a state file is missing or fails verification.
        """
        checks = sorted(
            (
                (task, name, handle)
                for task in manifest.tasks.values()
                for name, handle in task.handles.items()
            ),
            key=lambda check: -check[2].size,
        )

        def check(task: TaskSnapshot, name: str, handle: StateHandle) -> None:
            if self._local_verifier is None or not self._local_verifier(
                manifest.checkpoint_id, task, name, handle
            ):
                self.read_state(handle)

        workers = min(len(checks), os.cpu_count() or 1)
        if workers <= 1:
            for task, name, handle in checks:
                check(task, name, handle)
            return
        pool = ThreadPoolExecutor(workers, thread_name_prefix="weirflow-verify")
        try:
            for future in [pool.submit(check, *c) for c in checks]:
                future.result()
        finally:
            # a corrupt file ends the check: the files not yet started are not read
            pool.shutdown(cancel_futures=True)

    def set_local_verifier(self, verifier: LocalVerifier | None) -> None:
        """Let ``verifier`` vouch for files kept locally (local recovery).

        Args:
            verifier: ``(checkpoint id, task snapshot, handle name, handle) ->
                bool``: whether a local copy of the file has the checksum the
                manifest records; ``None`` reads every file again.
        """
        self._local_verifier = verifier

    def completed_checkpoints(self) -> list[int]:
        """Return the ids of checkpoints that have a manifest, ascending."""
        return [n for n, has_manifest in self._checkpoint_dirs() if has_manifest]

    def _checkpoint_dirs(self) -> list[tuple[int, bool]]:
        # Listings may be cached (s3fs), also for chk-<n> folders another writer has since
        # completed; a stale listing would hide a manifest.
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            match = _CHK_DIR.fullmatch(posixpath.basename(entry.rstrip("/")))
            if match:
                n = int(match.group(1))
                found.append((n, self.fs.exists(f"{self._chk_dir(n)}/{MANIFEST_NAME}")))
        return sorted(found)

    def latest_valid(self, on_corrupt: OnCorrupt | None = None) -> Manifest | None:
        """Return the newest completed checkpoint whose manifest and state files all verify.

        Steps:
            1. list completed checkpoints, newest first;
            2. load and verify each (manifest, then every state file);
            3. report an unusable one through ``on_corrupt`` and try the previous.

        Args:
            on_corrupt: called with ``(path, error)`` for each checkpoint skipped.

        Returns:
            The manifest (handle paths absolute), or ``None`` if none is usable.
        """
        for checkpoint_id in reversed(self.completed_checkpoints()):
            try:
                manifest = self.load_manifest(checkpoint_id)
                self.verify(manifest)
            except CheckpointError as e:
                path = (
                    e.path
                    if isinstance(e, CheckpointCorruptError)
                    else self.checkpoint_url(checkpoint_id)
                )
                log.warning("checkpoint %s of job %s is unusable: %s", checkpoint_id, self.job, e)
                if on_corrupt is not None:
                    on_corrupt(path, e)
                continue
            return manifest
        return None

    # -- deletion ------------------------------------------------------------

    def apply_retention(self, retained: int, *, keep: Collection[int] = ()) -> list[int]:
        """Delete checkpoints no longer needed.

        Deletes completed checkpoints older than the newest ``retained`` ones,
        and folders without a manifest (failed or abandoned checkpoints) older
        than the newest completed one. A completed checkpoint loses its
        manifest first, so a deletion cut short never leaves a checkpoint that
        looks completed but lacks files.

        Args:
            retained: number of newest completed checkpoints to keep, >= 1.
            keep: ids never deleted here: checkpoints still pending, whose
                folders have no manifest yet.

        Returns:
            The ids deleted, ascending.

        Raises:
            CheckpointError: ``retained`` < 1, or a deletion failed.
        """
        if retained < 1:
            raise CheckpointError(f"retained must be >= 1, got {retained}")
        dirs = self._checkpoint_dirs()
        completed = [n for n, has_manifest in dirs if has_manifest]
        if not completed:
            return []
        newest = completed[-1]
        doomed = set(completed[:-retained])
        doomed.update(n for n, has_manifest in dirs if not has_manifest and n < newest)
        doomed.difference_update(keep)
        for n in sorted(doomed):
            self._delete_checkpoint(n)
        return sorted(doomed)

    def _delete_checkpoint(self, checkpoint_id: int) -> None:
        folder = self._chk_dir(checkpoint_id)
        try:
            if self.fs.exists(f"{folder}/{MANIFEST_NAME}"):
                self.fs.rm_file(f"{folder}/{MANIFEST_NAME}")
            if self.fs.exists(folder):
                self.fs.rm(folder, recursive=True)
        except FileNotFoundError:
            return
        except OSError as e:
            raise CheckpointError(f"cannot delete {self.fs.unstrip_protocol(folder)}: {e}") from e

    def abort_checkpoint(self, checkpoint_id: int) -> None:
        """Delete the files of a checkpoint that never completed.

        Args:
            checkpoint_id: the failed checkpoint's id; a missing folder is fine.

        Raises:
            CheckpointError: the checkpoint has a manifest (it completed), or deletion failed.
        """
        if self.fs.exists(f"{self._chk_dir(checkpoint_id)}/{MANIFEST_NAME}"):
            raise CheckpointError(
                f"checkpoint {checkpoint_id} of job {self.job!r} completed; it is deleted by "
                "retention, not aborted"
            )
        self._delete_checkpoint(checkpoint_id)

    # -- savepoints and restore ----------------------------------------------

    def write_savepoint(self, manifest: Manifest, target_url: str) -> str:
        """Copy a checkpoint into a self-contained, portable savepoint folder.

        Steps:
            1. copy every state file into the target folder, verifying each;
            2. commit the savepoint manifest (paths relative to the folder) exclusively.

        Args:
            manifest: a completed checkpoint's manifest (from :meth:`load_manifest`
                or the coordinator).
            target_url: the savepoint folder, a local path or fsspec URL.

        Returns:
            The savepoint folder's URL, to pass to :meth:`load_savepoint` or as ``restore``.

        Raises:
            CheckpointConflictError: the target folder already holds a savepoint.
            CheckpointCorruptError: a source state file fails verification.
            CheckpointError: a write failed.
        """
        fs, folder = self._fs_for(target_url) if "://" in target_url else open_fs(target_url, {})
        copied = manifest.map_handles(lambda h: self._copy_into(h, fs, folder))
        savepoint = dataclasses.replace(copied, is_savepoint=True)
        path = f"{folder}/{MANIFEST_NAME}"
        try:
            created = put_exclusive(fs, path, savepoint.to_bytes(self._key))
        except OSError as e:
            raise CheckpointError(
                f"cannot write savepoint manifest {fs.unstrip_protocol(path)}: {e}"
            ) from e
        if not created:
            raise CheckpointConflictError(
                f"{fs.unstrip_protocol(folder)} already holds a savepoint; choose another folder"
            )
        return fs.unstrip_protocol(folder)

    def _copy_into(
        self, handle: StateHandle, fs: fsspec.AbstractFileSystem, folder: str
    ) -> StateHandle:
        relative = self._relative_to_root(handle).path
        if "://" in relative:
            digest = hashlib.sha256(relative.encode()).hexdigest()[:12]
            relative = f"external/{digest}-{posixpath.basename(relative)}"
        target = f"{folder}/{relative}"
        try:
            with open_durable(fs, target) as out:
                self.copy_verified(handle, out, with_header=True)
        except BaseException as e:
            # no manifest will name a partial copy, but it must not sit in the user's folder
            with contextlib.suppress(OSError):
                fs.rm_file(target)
            if isinstance(e, OSError):
                raise CheckpointError(f"cannot write {fs.unstrip_protocol(target)}: {e}") from e
            raise
        return dataclasses.replace(handle, path=relative)

    def load_savepoint(self, url: str) -> Manifest:
        """Load and verify a savepoint (or a checkpoint folder) from any location.

        Args:
            url: the savepoint or ``chk-<n>`` folder, or its ``_manifest`` file.

        Returns:
            The manifest, its handle paths as absolute URLs.

        Raises:
            CheckpointError: there is no manifest at ``url``.
            CheckpointCorruptError: the manifest or a state file fails verification.
        """
        fs, path = self._fs_for(url) if "://" in url else open_fs(url, {})
        folder = posixpath.dirname(path) if posixpath.basename(path) == MANIFEST_NAME else path
        manifest = self._load_at(fs, folder)
        self.verify(manifest)
        return manifest

    def resolve_restore(self, restore: str | None) -> Manifest | None:
        """Decide which checkpoint a job starts from.

        Args:
            restore: ``None`` (start fresh, allowed only while the job has no
                completed checkpoint here), ``"none"`` (start fresh on
                purpose: earlier checkpoints are kept but not restored, and
                this run's checkpoints are numbered after them), ``"latest"``
                (the newest usable checkpoint, which must exist),
                ``"latest-or-fresh"`` (the newest usable one, or fresh if there
                is none), or the path/URL of a ``chk-<n>`` folder, a
                ``_manifest`` file or a savepoint folder.

        Returns:
            The verified manifest to restore, or ``None`` to start fresh.

        Raises:
            NoCheckpointError: ``"latest"`` and no usable checkpoint exists (the
                message says how to start fresh).
            CheckpointError: ``None`` and the job has completed checkpoints
                (see :meth:`check_fresh_start`), or no manifest at the path.
            CheckpointCorruptError: the checkpoint at an explicit path fails verification.
        """
        if restore is None:
            self.check_fresh_start()
            return None
        if restore == FRESH:
            return None
        if restore in ("latest", "latest-or-fresh"):
            skipped: list[str] = []
            manifest = self.latest_valid(lambda path, e: skipped.append(f"{path} ({e})"))
            if manifest is None and restore == "latest":
                raise NoCheckpointError(self.job, self.root_url, skipped)
            return manifest
        return self.load_savepoint(restore)

    def check_fresh_start(self) -> None:
        """Refuse a fresh start that nobody asked for over this job's completed checkpoints.

        Starting fresh reprocesses the input from its start, so every result
        the earlier run's sinks committed would be committed again.

        Raises:
            CheckpointError: the job has completed checkpoints here; the
                message names the ways to go on.
        """
        completed = self.completed_checkpoints()
        if completed:
            raise CheckpointError(
                f"job {self.job!r} already has completed checkpoints under {self.root_url} "
                f"(newest: chk-{completed[-1]}); starting fresh would commit every result "
                "they cover again. Resume with --restore latest (restore='latest'), or start "
                "fresh on purpose with --restore none / --fresh (restore='none'; the old "
                "checkpoints are kept but not restored)"
            )

    def default_savepoint_url(self, checkpoint_id: int) -> str:
        """Return the default savepoint folder URL: ``<job>/savepoints/savepoint-<n>``."""
        return self.fs.unstrip_protocol(f"{self.root}/savepoints/savepoint-{checkpoint_id}")


def _rebased(handle: StateHandle, base_url: str) -> StateHandle:
    if "://" in handle.path:
        return handle
    return dataclasses.replace(handle, path=f"{base_url}/{handle.path}")
