"""File-system primitives over fsspec: durable writes and exclusive (create-only) writes.

Exclusive creation is what makes a manifest commit safe against two writers:

- local file system: write a temporary file, fsync it, then ``os.link`` it to
  the final name. ``link`` fails if the name exists, so exactly one writer
  wins, and a reader never sees a half-written manifest.
- S3 (and S3-compatible stores): object stores have no rename, so the put is
  conditional: ``If-None-Match: *`` (s3fs ``pipe_file(mode="create")``). The
  store rejects the second writer with ``412 Precondition Failed``.
- other fsspec file systems: ``pipe_file(mode="create")``, which is atomic
  where the backend implements it (memory) and an exists-then-write check
  elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import fsspec
from fsspec.core import split_protocol
from fsspec.implementations.local import LocalFileSystem

from weirflow.checkpoint.errors import CheckpointStorageError

_CONFLICT_RETRIES = 5
_CONFLICT_BACKOFF_S = 0.05
# protocols whose file system comes with one of weirflow's extras
_EXTRA_OF_PROTOCOL = {"s3": "s3", "s3a": "s3"}


def open_fs(url: str, storage_options: Mapping[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the fsspec file system for ``url`` and the path within it.

    Args:
        url: a local path or an fsspec URL.
        storage_options: keyword arguments for the file system (credentials, endpoint).

    Returns:
        ``(filesystem, path)``, the path stripped of its protocol and trailing ``/``.

    Raises:
        CheckpointStorageError: the protocol is unknown to fsspec, or its
            package is not installed (the message says what to install).
    """
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as e:
        extra = _EXTRA_OF_PROTOCOL.get(protocol_of(url))
        fix = f"pip install 'weirflow[{extra}]'" if extra else "install the package it names"
        raise CheckpointStorageError(f"storage {url} needs a package: {e}; {fix}") from e
    except ValueError as e:
        # fsspec says "Protocol not known: <name>" for a scheme it has no file system for
        raise CheckpointStorageError(
            f"storage {url}: {e}; use a local folder or a URL such as s3://bucket/prefix"
        ) from e
    return fs, path.rstrip("/") or path


def protocol_of(url: str) -> str:
    """Return the protocol of ``url``: ``file`` for plain paths, else the scheme (``s3``)."""
    return split_protocol(url)[0] or "file"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Return whether ``fs`` is the local file system."""
    return isinstance(fs, LocalFileSystem)


def write_durable(
    fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, head: bytes = b""
) -> None:
    """Write ``head`` then ``data`` to ``path`` (replacing it) so that it survives a crash once
    this returns.

    Args:
        fs: the file system.
        path: the file's path within ``fs``; parent folders are created.
        data: the bytes.
        head: bytes written before ``data`` (a state file's header), given apart so that a
            local write does not copy ``data`` to join them.

    Raises:
        OSError: the write failed.
    """
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(head)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    fs.pipe_file(path, head + data if head else data)


COPY_CHUNK_BYTES = 1 << 20
"""Bytes read and written at a time when a file is streamed to or from storage."""


def write_durable_stream(
    fs: fsspec.AbstractFileSystem, path: str, head: bytes, source: BinaryIO, length: int
) -> None:
    """Write ``head`` then ``length`` bytes of ``source`` to ``path``, in chunks, durably.

    Memory use is one chunk (:data:`COPY_CHUNK_BYTES`), whatever the size;
    on object stores fsspec turns the chunks into a multipart upload.

    Args:
        fs: the file system.
        path: the file's path within ``fs``; parent folders are created.
        head: bytes written first (the state file's header).
        source: a binary file positioned at the payload's start.
        length: payload bytes to copy; ``source`` must hold exactly that many.

    Raises:
        OSError: the write failed, or ``source`` held another number of bytes
            (it changed since its length was taken).
    """
    with open_durable(fs, path) as f:
        f.write(head)
        counted = _Counting(source)
        shutil.copyfileobj(counted, f, COPY_CHUNK_BYTES)
        if counted.count != length:
            raise OSError(errno.EIO, f"source held {counted.count} bytes, not {length}")


@contextlib.contextmanager
def open_durable(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[BinaryIO]:
    """Open ``path`` for writing (replacing it); once the block exits, the file survives a crash.

    Local files are fsynced at the end; on object stores the object appears
    when the block exits (also when it raises: delete it then, if it must
    not stay).

    Args:
        fs: the file system.
        path: the file's path within ``fs``; parent folders are created.

    Raises:
        OSError: opening or writing failed.
    """
    if not is_local(fs):
        with fs.open(path, "wb") as remote:
            yield remote
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


class _Counting:
    """A binary reader that counts the bytes read through it (for ``copyfileobj``)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.count += len(data)
        return data


def put_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist yet, atomically.

    Args:
        fs: the file system.
        path: the file's path within ``fs``; parent folders are created.
        data: the bytes.

    Returns:
        ``True`` if this call created the file, ``False`` if it already existed
        (another writer won; nothing was changed).

    Raises:
        OSError: the write failed for another reason.
    """
    if is_local(fs):
        return _link_exclusive(path, data)
    for attempt in range(_CONFLICT_RETRIES):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as e:
            code = _s3_error_code(e)
            if code in ("PreconditionFailed", "412"):
                return False
            # S3 answers 409 while a concurrent conditional write to the key is
            # in flight; once it settles the retry gets a definite answer.
            if code != "ConditionalRequestConflict" or attempt == _CONFLICT_RETRIES - 1:
                raise
            time.sleep(_CONFLICT_BACKOFF_S * (attempt + 1))
    return False


def _link_exclusive(path: str, data: bytes) -> bool:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(folder)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems cannot fsync a directory; the link is still made.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _s3_error_code(exc: BaseException) -> str | None:
    """Find the S3 error code in ``exc`` or the exceptions it was raised from."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code is not None:
                return str(code)
        seen = seen.__cause__ or seen.__context__
    return None
