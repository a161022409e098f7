"""Signed state files under one job's folder, on any fsspec file system.

A state file is the bytes one task wrote for one checkpoint, framed with
magic, format version, SHA-256 checksum and (given the job's checkpoint key)
a signature (see :mod:`.fileformat`). Files of checkpoint n live under
``<root>/<job>/chk-<n>/``, files reused by several checkpoints under
``<root>/<job>/shared/``; a handle's path is relative to the job folder or,
for a file elsewhere (a savepoint), a full URL.

Without a key files are written unsigned and read unauthenticated, so
callers must never unpickle what is read (``authenticated``). Manifests,
retention and savepoints are :class:`weirflow.checkpoint.CheckpointStorage`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from weirflow.checkpoint.errors import CheckpointCorruptError, CheckpointStorageError
from weirflow.checkpoint.fileformat import (
    HEADER_SIZE,
    check_payload,
    frame_header,
    header,
    read_header,
    unframe,
)
from weirflow.checkpoint.fs import (
    COPY_CHUNK_BYTES,
    open_fs,
    protocol_of,
    write_durable,
    write_durable_stream,
)
from weirflow.checkpoint.handles import StateHandle, is_safe_name
from weirflow.errors import CheckpointError

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+@-]*")


class StateFiles:
    """Writes and reads one job's state files under a folder or fsspec URL.

    Args:
        url: the storage root: a local folder or an fsspec URL
            (``s3://bucket/prefix``, ``memory://name``).
        job: the job's name, a folder under the root (letters, digits, ``._=+@-``).
        storage_options: keyword arguments for the fsspec file system
            (``endpoint_url``, ``key``, ``secret``...); also used for savepoint
            and restore URLs of the same protocol.
        key: the checkpoint key (see :func:`weirflow.checkpoint.load_checkpoint_key`),
            or ``None``: files are then written unsigned and read unauthenticated.

    Raises:
        CheckpointError: the job name is not a safe folder name.
        CheckpointStorageError: the URL's protocol is unknown or its package
            is missing.
    """

    def __init__(
        self,
        url: str,
        job: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        key: bytes | None = None,
    ) -> None:
        if not _JOB_NAME.fullmatch(job):
            raise CheckpointError(
                f"job name {job!r} cannot be a storage folder: use letters, digits and ._=+@-"
            )
        self.job = job
        self._options = dict(storage_options or {})
        self.fs, base = open_fs(url, self._options)
        self.root = f"{base}/{job}"
        self._key = key

    @property
    def authenticated(self) -> bool:
        """Whether every file read was verified under the checkpoint key.

        Only then may a caller decode pickled values from what it read.
        """
        return self._key is not None

    @property
    def root_url(self) -> str:
        """The job folder as a full URL (``file:///...``, ``s3://...``)."""
        return self.fs.unstrip_protocol(self.root)

    def check_writable(self) -> None:
        """Create and remove a probe file in the job folder, so that a run fails at its
        start, not at its first checkpoint, when the storage cannot take checkpoints.

        Raises:
            CheckpointStorageError: a part of the path is a file, or the probe
                cannot be written or removed (permissions, read-only file system,
                credentials); the message names the location.
        """
        probe = f"{self.root}/_probe-{uuid.uuid4().hex}"
        try:
            write_durable(self.fs, probe, b"")
            self.fs.rm_file(probe)
        except (NotADirectoryError, FileExistsError) as e:
            raise CheckpointStorageError(
                f"checkpoint storage {self.root_url} is not a folder: a part of the path is a "
                f"file ({e}); choose a folder"
            ) from e
        except OSError as e:
            raise CheckpointStorageError(
                f"checkpoint storage {self.root_url} is not writable ({e}); choose a location "
                "this process can write"
            ) from e

    def write_state(self, checkpoint_id: int, name: str, data: bytes) -> StateHandle:
        """Write one state file of checkpoint ``checkpoint_id``, durably.

        Args:
            checkpoint_id: the checkpoint the file belongs to.
            name: file name within the checkpoint folder (see
                :func:`weirflow.checkpoint.state_file_name` to build one from a task id).
            data: the state bytes; a header with magic, format version,
                SHA-256 checksum and signature is prepended.

        Returns:
            A handle with the path relative to the job folder (``chk-<n>/<name>``).

        Raises:
            CheckpointError: ``name`` is unsafe, or the write failed (I/O error).
        """
        return self._write(f"chk-{checkpoint_id}/{self._checked_name(name)}", data)

    def write_shared_state(self, name: str, data: bytes) -> StateHandle:
        """Write a state file into ``shared/``, for reuse by several checkpoints.

        Retention does not delete shared files; their owner does.

        Args:
            name: file name within ``shared/``.
            data: the state bytes.

        Returns:
            A handle with the path ``shared/<name>``.

        Raises:
            CheckpointError: ``name`` is unsafe, or the write failed.
        """
        return self._write(f"shared/{self._checked_name(name)}", data)

    def write_state_file(self, checkpoint_id: int, name: str, source: Path) -> StateHandle:
        """Write the local file ``source`` as a state file of checkpoint ``checkpoint_id``.

        Like :meth:`write_state`, but streamed: memory use is one chunk,
        whatever the file's size (see :meth:`_write_file`).

        Raises:
            CheckpointError: ``name`` is unsafe, the write failed, or ``source``
                cannot be read or changed while it was written.
        """
        return self._write_file(f"chk-{checkpoint_id}/{self._checked_name(name)}", source)

    def write_shared_state_file(self, name: str, source: Path) -> StateHandle:
        """Stream the local file ``source`` into ``shared/`` (as :meth:`write_shared_state`).

        Raises:
            CheckpointError: ``name`` is unsafe, the write failed, or ``source``
                cannot be read or changed while it was written.
        """
        return self._write_file(f"shared/{self._checked_name(name)}", source)

    def _write_file(self, relative: str, source: Path) -> StateHandle:
        """Hash ``source`` in chunks, then stream the header and its bytes to storage.

        The header holds the payload's SHA-256 and comes first, so the file
        is read twice (both times in chunks, the second from the page cache).
        """
        url = f"{self.root_url}/{relative}"
        try:
            with source.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").digest()
                length = f.tell()
                f.seek(0)
                write_durable_stream(
                    self.fs, f"{self.root}/{relative}", header(digest, length, self._key), f, length
                )
        except OSError as e:
            raise CheckpointError(f"cannot write state file {url} from {source}: {e}") from e
        return StateHandle(relative, HEADER_SIZE + length, "sha256:" + digest.hex())

    def read_state_into(self, handle: StateHandle, target: Path) -> None:
        """Read and verify one state file into the local file ``target``, streamed.

        Memory use is one chunk, whatever the file's size. The payload is
        hashed as it is copied; ``target`` is removed when it fails a check.

        Args:
            handle: a handle from a write or a loaded manifest.
            target: the local file to write (replaced).

        Raises:
            CheckpointCorruptError: as :meth:`read_state`, the error names the path.
            OSError: ``target`` cannot be written.
        """
        try:
            with target.open("wb") as out:
                self.copy_verified(handle, out, with_header=False)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def copy_verified(self, handle: StateHandle, out: BinaryIO, *, with_header: bool) -> None:
        """Copy one state file into ``out`` in chunks, verifying it on the way.

        The header is checked (signature included) before any payload byte is
        copied, the payload's checksum and size after the last: on an error
        ``out`` holds part of the file, which the caller must discard.

        Args:
            handle: a handle from a write or a loaded manifest.
            out: where the bytes go.
            with_header: copy the whole file (a verified copy, for a
                savepoint) instead of the payload only.

        Raises:
            CheckpointCorruptError: as :meth:`read_state`, the error names the path.
            OSError: writing to ``out`` failed.
        """
        fs, path = self._locate(handle.path)
        url = fs.unstrip_protocol(path)
        try:
            source = fs.open(path, "rb")
        except FileNotFoundError as e:
            raise CheckpointCorruptError(url, "missing") from e
        except OSError as e:
            raise CheckpointCorruptError(url, f"unreadable: {e}") from e
        with source:
            head = source.read(HEADER_SIZE)
            expected = read_header(head, url, self._key)
            if with_header:
                out.write(head)
            found = _copy_hashing(source, out)
        check_payload(url, expected, found, handle.checksum)
        if HEADER_SIZE + found[0] != handle.size:
            raise CheckpointCorruptError(
                url,
                f"size {HEADER_SIZE + found[0]} bytes differs from {handle.size} "
                "recorded in the manifest",
            )

    @staticmethod
    def _checked_name(name: str) -> str:
        if not is_safe_name(name):
            raise CheckpointError(
                f"state file name {name!r} is not allowed: use '/'-separated segments of "
                "letters, digits and ._=+@- not starting with '.', and not '_manifest'"
            )
        return name

    def _write(self, relative: str, data: bytes) -> StateHandle:
        head, checksum = frame_header(data, self._key)
        try:
            write_durable(self.fs, f"{self.root}/{relative}", data, head=head)
        except OSError as e:
            raise CheckpointError(f"cannot write state file {self.root_url}/{relative}: {e}") from e
        return StateHandle(relative, len(head) + len(data), checksum)

    def read_state(self, handle: StateHandle) -> bytes:
        """Read and verify one state file.

        Args:
            handle: a handle from :meth:`write_state` or from a loaded manifest.

        Returns:
            The state bytes as given to :meth:`write_state`.

        Raises:
            CheckpointCorruptError: the file is missing, has another size than
                the handle says, bad magic, an unknown format version, is
                truncated, fails its checksum, or (with a key) is not signed
                with the key; the error names the path.
        """
        fs, path = self._locate(handle.path)
        raw = self._read_raw(fs, path)
        url = fs.unstrip_protocol(path)
        # The signature is checked first: for a replaced file it is the finding that matters.
        payload = unframe(raw, url, handle.checksum, self._key)
        if len(raw) != handle.size:
            raise CheckpointCorruptError(
                url, f"size {len(raw)} bytes differs from {handle.size} recorded in the manifest"
            )
        return payload

    @staticmethod
    def _read_raw(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
        try:
            return fs.cat_file(path)
        except FileNotFoundError as e:
            raise CheckpointCorruptError(fs.unstrip_protocol(path), "missing") from e
        except OSError as e:
            raise CheckpointCorruptError(fs.unstrip_protocol(path), f"unreadable: {e}") from e

    def _locate(self, path: str) -> tuple[fsspec.AbstractFileSystem, str]:
        if "://" in path:
            return self._fs_for(path)
        if any(seg in ("", ".", "..") for seg in path.split("/")):
            raise CheckpointCorruptError(path, "relative state path escapes the job folder")
        return self.fs, f"{self.root}/{path}"

    def _fs_for(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if protocol_of(url) in protocols:
            return self.fs, self.fs._strip_protocol(url).rstrip("/")
        return open_fs(url, {})

    def _relative_to_root(self, handle: StateHandle) -> StateHandle:
        prefix = self.root_url + "/"
        if handle.path.startswith(prefix):
            return dataclasses.replace(handle, path=handle.path[len(prefix) :])
        return handle


def _copy_hashing(source: BinaryIO, target: BinaryIO) -> tuple[int, bytes]:
    """Copy ``source`` to its end into ``target`` in chunks; return ``(bytes, SHA-256)``."""
    digest = hashlib.sha256()
    count = 0
    while chunk := source.read(COPY_CHUNK_BYTES):
        digest.update(chunk)
        target.write(chunk)
        count += len(chunk)
    return count, digest.digest()
