"""The framing of every state file in checkpoint storage: a header, then the payload.

Layout (big-endian)::

    magic    4 bytes   b"WFCK"
    version  u16       FORMAT_VERSION (2)
    flags    u16       bit 0: signed (the hmac field holds a signature)
    length   u64       payload bytes
    sha256   32 bytes  of the payload
    hmac     32 bytes  HMAC-SHA256 under the checkpoint key of the 48 header
                       bytes before it (which hold the payload's sha256);
                       zeros when unsigned
    payload  length bytes

The header lets a reader refuse foreign files and other formats, and catch
truncation and bit flips, before any byte of state is decoded. The sha256
alone proves nothing against a forger (anyone can recompute it); the hmac
does, for whoever holds the key. A reader with a key accepts only files
whose signature verifies under it; a reader without one cannot tell forged
files from real ones, so it must never unpickle their payload.

Version 1 (no signature) is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from weirflow.checkpoint.errors import CheckpointCorruptError
from weirflow.checkpoint.keys import MAC_SIZE, sign, verify
from weirflow.errors import UnsupportedFormatVersionError
from weirflow.serde import check_format_version

MAGIC = b"WFCK"
FORMAT_VERSION = 2
_SIGNED = 0x0001
_SIGNED_PART = struct.Struct(">4sHHQ32s")
HEADER_SIZE = _SIGNED_PART.size + MAC_SIZE
_NO_MAC = bytes(MAC_SIZE)


def checksum_of(payload: bytes) -> str:
    """Return ``"sha256:<hex>"`` of ``payload``."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def checksum_of_file(path: Path) -> str:
    """Return ``"sha256:<hex>"`` of the file at ``path``, read in chunks (never whole).

    Raises:
        OSError: the file cannot be read.
    """
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def frame(payload: bytes, key: bytes | None) -> bytes:
    """Prefix ``payload`` with the header, signed when a key is given.

    Args:
        payload: the state bytes.
        key: the checkpoint key, or ``None`` to write an unsigned file.

    Returns:
        The whole file's bytes.
    """
    return frame_header(payload, key)[0] + payload


def frame_header(payload: bytes, key: bytes | None) -> tuple[bytes, str]:
    """Return the header to write before ``payload``, and the payload's checksum, hashing
    the payload once (a state file can hold tens of MB: a sink's staged rows).

    Args:
        payload: the state bytes.
        key: the checkpoint key, or ``None`` for an unsigned header.

    Returns:
        ``(header, "sha256:<hex>")``: :data:`HEADER_SIZE` bytes, and the checksum
        :func:`checksum_of` gives for ``payload``.
    """
    digest = hashlib.sha256(payload).digest()
    return header(digest, len(payload), key), "sha256:" + digest.hex()


def header(digest: bytes, length: int, key: bytes | None) -> bytes:
    """Return the header of a payload of ``length`` bytes whose SHA-256 is ``digest``.

    Args:
        digest: the payload's SHA-256 (32 bytes).
        length: the payload's size in bytes.
        key: the checkpoint key, or ``None`` for an unsigned header.

    Returns:
        :data:`HEADER_SIZE` bytes, to be followed by the payload.
    """
    flags = _SIGNED if key is not None else 0
    signed_part = _SIGNED_PART.pack(MAGIC, FORMAT_VERSION, flags, length, digest)
    mac = sign(key, signed_part) if key is not None else _NO_MAC
    return signed_part + mac


def read_header(data: bytes, path: str, key: bytes | None = None) -> tuple[int, bytes]:
    """Verify a file's header (its first :data:`HEADER_SIZE` bytes or more).

    Args:
        data: the file's bytes from its start.
        path: the file's URL, for error messages.
        key: the checkpoint key; when given, the header must be signed with it.

    Returns:
        ``(payload length in bytes, payload SHA-256 digest)``, to check the payload against.

    Raises:
        CheckpointCorruptError: shorter than a header, wrong magic, unknown
            format version, or (with a key) a missing or wrong signature.
    """
    if len(data) < HEADER_SIZE:
        raise CheckpointCorruptError(
            path, f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version, flags, length, digest = _SIGNED_PART.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointCorruptError(path, f"bad magic {magic!r}: not a weirflow state file")
    try:
        check_format_version(version, FORMAT_VERSION, path, oldest=FORMAT_VERSION)
    except UnsupportedFormatVersionError as e:
        raise CheckpointCorruptError(path, str(e)) from e
    if key is not None:
        _check_signature(data, flags, key, path)
    return length, digest


def check_payload(
    path: str,
    expected: tuple[int, bytes],
    found: tuple[int, bytes],
    expected_checksum: str | None,
) -> None:
    """Check a payload read against its header and the checksum its handle recorded.

    Args:
        path: the file's URL, for error messages.
        expected: ``(length, digest)`` from :func:`read_header`.
        found: ``(length, digest)`` of the payload as read.
        expected_checksum: the checksum the state handle recorded, if any.

    Raises:
        CheckpointCorruptError: truncated or extended, altered, or another
            checksum than the manifest records.
    """
    if found[0] != expected[0]:
        raise CheckpointCorruptError(
            path, f"truncated: header says {expected[0]} payload bytes, file holds {found[0]}"
        )
    if found[1] != expected[1]:
        raise CheckpointCorruptError(path, "checksum mismatch: the payload was altered")
    checksum = "sha256:" + expected[1].hex()
    if expected_checksum is not None and expected_checksum != checksum:
        raise CheckpointCorruptError(
            path, f"checksum {checksum} differs from {expected_checksum} recorded in the manifest"
        )


def unframe(
    data: bytes, path: str, expected_checksum: str | None = None, key: bytes | None = None
) -> bytes:
    """Verify a whole file and return its payload.

    Args:
        data: the file's bytes.
        path: the file's URL, for error messages.
        expected_checksum: the checksum the state handle recorded, if any.
        key: the checkpoint key; when given, the file must be signed with it.

    Returns:
        The payload bytes.

    Raises:
        CheckpointCorruptError: shorter than a header, wrong magic, unknown
            format version, length mismatch (truncated or extended), checksum
            mismatch, a checksum other than the handle recorded, or (with a
            key) a missing or wrong signature.
    """
    expected = read_header(data, path, key)
    payload = data[HEADER_SIZE:]
    found = (len(payload), hashlib.sha256(payload).digest())
    check_payload(path, expected, found, expected_checksum)
    return payload


def _check_signature(data: bytes, flags: int, key: bytes, path: str) -> None:
    if not flags & _SIGNED:
        raise CheckpointCorruptError(
            path,
            "not signed, but a checkpoint key is configured: the file was written without a "
            "key, or replaced",
        )
    signed_part = data[: _SIGNED_PART.size]
    if not verify(key, signed_part, data[_SIGNED_PART.size : HEADER_SIZE]):
        raise CheckpointCorruptError(
            path,
            "signature does not verify under the checkpoint key: the file was altered, or "
            "written with another key",
        )
