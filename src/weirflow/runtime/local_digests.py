"""Fast checks of the local copies of RocksDB checkpoint files (local recovery).

A restarted worker must check its local copy against the checkpoint's
manifest before it opens it, and the manifest records each file's SHA-256:
on 1 GB of state, SHA-256 alone (about 1.8 GB/s a core with the CPU's SHA
instructions) is most of a restart. So each local checkpoint folder also
holds :data:`DIGESTS_FILE`, written after the checkpoint's upload, that pairs
every file's SHA-256 (as the manifest records it) with its XXH3-128, a
non-cryptographic hash an order of magnitude faster. A local file is
accepted when the digests file pairs the manifest's SHA-256 with an XXH3 the
file's content has now; otherwise (no digests file, no entry, another
SHA-256 recorded) it is hashed with SHA-256 as before.

Soundness: a pair is recorded only from one content: the SHA-256 the upload
computed and the XXH3 of the same file read right after, its inode, size
and modification time unchanged in between (SST files never change once
written); or both hashes of one read; or the XXH3 of a file just verified
or downloaded under the manifest's SHA-256. XXH3 guards against corruption
of the local disk, not against an attacker who can write to it, who could
change the RocksDB database itself: checkpoint storage keeps SHA-256 and its
signature. Without the ``xxhash`` package (extra ``rocksdb``) no digests file
is written and every check uses SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

try:
    import xxhash
except ImportError:  # pragma: no cover - the rocksdb extra installs it
    xxhash = None

DIGESTS_FILE = "weirflow-digests.json"
"""The file of SHA-256 → XXH3 pairs in a local checkpoint folder (not a RocksDB file)."""
_VERSION = 1
_CHUNK_BYTES = 1 << 20
_KNOWN_LIMIT = 100_000

log = logging.getLogger("weirflow.checkpoint")
# SHA-256 checksum ("sha256:<hex>") -> XXH3-128 (hex) of the same content, as this
# process has computed or verified them
_known: dict[str, str] = {}
_known_lock = threading.Lock()


def available() -> bool:
    """Whether XXH3 is available (the ``xxhash`` package is installed)."""
    return xxhash is not None


def fast_digest(path: Path) -> str:
    """XXH3-128 of the file at ``path`` (hex), read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
        RuntimeError: ``xxhash`` is not installed (check :func:`available` first).
    """
    if xxhash is None:
        raise RuntimeError("xxhash is not installed: pip install 'weirflow[rocksdb]'")
    h = xxhash.xxh3_128()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def both_digests(path: Path) -> tuple[str, str]:
    """``("sha256:<hex>", XXH3-128 hex)`` of the file at ``path`` from one read.

    Raises:
        OSError: the file cannot be read.
        RuntimeError: ``xxhash`` is not installed.
    """
    if xxhash is None:
        raise RuntimeError("xxhash is not installed: pip install 'weirflow[rocksdb]'")
    sha, fast = hashlib.sha256(), xxhash.xxh3_128()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            sha.update(chunk)
            fast.update(chunk)
    return "sha256:" + sha.hexdigest(), fast.hexdigest()


def remember(checksum: str, fast: str) -> None:
    """Record that content with SHA-256 ``checksum`` has XXH3 ``fast`` (this process)."""
    with _known_lock:
        if len(_known) >= _KNOWN_LIMIT:
            _known.clear()
        _known[checksum] = fast


def remember_file(checksum: str, path: Path) -> None:
    """Record the XXH3 of ``path``, whose content was just verified to have ``checksum``
    (a download checked as it was written). Nothing happens without ``xxhash`` or when
    the file cannot be read."""
    if xxhash is None:
        return
    try:
        remember(checksum, fast_digest(path))
    except OSError:
        return


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _pair(path: Path, checksum: str, fresh: bool) -> str | None:
    """The XXH3 of ``path`` if its content has ``checksum``; ``None`` if not (or unreadable).

    ``fresh``: the SHA-256 was computed from this file by the upload just now, so only
    XXH3 is computed, with the file's identity checked unchanged around it."""
    with _known_lock:
        known = _known.get(checksum)
    if known is not None:
        return known
    try:
        if fresh:
            before = _identity(path)
            fast = fast_digest(path)
            if _identity(path) != before:
                return None
        else:
            sha, fast = both_digests(path)
            if sha != checksum:
                return None
    except OSError:
        return None
    remember(checksum, fast)
    return fast


def write_digests(folder: Path, checksums: Mapping[str, str], uploaded: frozenset[str]) -> None:
    """Write ``folder``'s :data:`DIGESTS_FILE` for the files of ``checksums``.

    Args:
        folder: a local checkpoint folder.
        checksums: file name → the SHA-256 checksum its handle records.
        uploaded: the names whose checksum the upload computed from these very files
            just now (the others are hashed with both algorithms unless known).

    A failure to write (full disk) is logged: local recovery then checks with SHA-256.
    """
    if xxhash is None:
        return
    files: dict[str, list[str]] = {}
    for name, checksum in checksums.items():
        fast = _pair(folder / name, checksum, name in uploaded)
        if fast is not None:
            files[name] = [checksum, fast]
    target = folder / DIGESTS_FILE
    partial = target.with_name(target.name + ".part")
    try:
        partial.write_text(json.dumps({"version": _VERSION, "files": files}))
        os.replace(partial, target)
    except OSError as e:
        log.warning("cannot write %s (%s); local recovery will check with SHA-256", target, e)
        partial.unlink(missing_ok=True)


def recorded_fast_digest(folder: Path, name: str, checksum: str) -> str | None:
    """The XXH3 ``folder``'s digests file pairs with ``checksum`` for file ``name``, if any.

    ``None`` without ``xxhash``, a digests file, an entry, or when the entry records
    another SHA-256 (an unreadable or malformed digests file counts as none).
    """
    if xxhash is None:
        return None
    try:
        data = json.loads((folder / DIGESTS_FILE).read_text())
        recorded, fast = data["files"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("version") != _VERSION or recorded != checksum or not isinstance(fast, str):
        return None
    return fast
