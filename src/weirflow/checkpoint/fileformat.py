"""The framing of every state file in checkpoint storage: a header, then the payload.

Layout (big-endian)::

    magic    4 bytes   b"WFCK"
    version  u16       FORMAT_VERSION
    reserved u16       0
    length   u64       payload bytes
    sha256   32 bytes  of the payload
    payload  length bytes

The header lets a reader refuse foreign files and newer formats, and catch
truncation and bit flips, before any byte of state is decoded.
"""

from __future__ import annotations

import hashlib
import struct

from weirflow.checkpoint.errors import CheckpointCorruptError
from weirflow.errors import UnsupportedFormatVersionError
from weirflow.serde import check_format_version

MAGIC = b"WFCK"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sHHQ32s")
HEADER_SIZE = _HEADER.size


def checksum_of(payload: bytes) -> str:
    """Return ``"sha256:<hex>"`` of ``payload``."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with the header.

    Args:
        payload: the state bytes.

    Returns:
        The whole file's bytes.
    """
    digest = hashlib.sha256(payload).digest()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), digest) + payload


def unframe(data: bytes, path: str, expected_checksum: str | None = None) -> bytes:
    """Verify a whole file and return its payload.

    Args:
        data: the file's bytes.
        path: the file's URL, for error messages.
        expected_checksum: the checksum the state handle recorded, if any.

    Returns:
        The payload bytes.

    Raises:
        CheckpointCorruptError: shorter than a header, wrong magic, unknown
            format version, length mismatch (truncated or extended), checksum
            mismatch, or a checksum other than the handle recorded.
    """
    if len(data) < HEADER_SIZE:
        raise CheckpointCorruptError(
            path, f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version, _reserved, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointCorruptError(path, f"bad magic {magic!r}: not a weirflow state file")
    try:
        check_format_version(version, FORMAT_VERSION, path)
    except UnsupportedFormatVersionError as e:
        raise CheckpointCorruptError(path, str(e)) from e
    payload = data[HEADER_SIZE:]
    if len(payload) != length:
        raise CheckpointCorruptError(
            path, f"truncated: header says {length} payload bytes, file holds {len(payload)}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointCorruptError(path, "checksum mismatch: the payload was altered")
    found = "sha256:" + digest.hex()
    if expected_checksum is not None and expected_checksum != found:
        raise CheckpointCorruptError(
            path, f"checksum {found} differs from {expected_checksum} recorded in the manifest"
        )
    return payload
