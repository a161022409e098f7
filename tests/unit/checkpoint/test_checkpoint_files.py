"""State file framing and manifest serialization: every corruption is caught and named."""

import base64
import hashlib
import json
import pickle
import struct

import pytest

from weirflow.checkpoint import CheckpointCorruptError, Manifest, StateHandle, TaskSnapshot
from weirflow.checkpoint.fileformat import (
    HEADER_SIZE,
    checksum_of,
    frame,
    frame_header,
    unframe,
)
from weirflow.checkpoint.handles import is_safe_name, state_file_name
from weirflow.errors import SerdeError

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def test_frame_round_trip() -> None:
    payload = b"keyed state \x00\xff"
    assert unframe(frame(payload, None), "p", checksum_of(payload)) == payload
    assert unframe(frame(payload, KEY), "p", checksum_of(payload), KEY) == payload


@pytest.mark.parametrize("key", [None, KEY])
def test_frame_header_is_the_frame_before_the_payload_with_its_checksum(
    key: bytes | None,
) -> None:
    payload = b"staged rows " * 100
    head, checksum = frame_header(payload, key)
    assert len(head) == HEADER_SIZE
    assert head + payload == frame(payload, key)
    assert checksum == checksum_of(payload)


def test_signed_file_is_refused_under_another_key_or_after_a_forged_edit() -> None:
    data = frame(b"state", KEY)
    with pytest.raises(CheckpointCorruptError, match="signature does not verify"):
        unframe(data, "p", None, OTHER_KEY)
    # A forger rewrites payload and sha256 (they know the format), not the signature.
    forged = bytearray(frame(b"evil!", KEY))
    forged[-5:] = b"EVIL!"
    forged[16:48] = hashlib.sha256(b"EVIL!").digest()
    unframe(bytes(forged), "p", None, None)  # without a key nothing can tell
    with pytest.raises(CheckpointCorruptError, match="signature does not verify") as info:
        unframe(bytes(forged), "s3://b/job/chk-1/x", None, KEY)
    assert info.value.path == "s3://b/job/chk-1/x"


def test_unsigned_file_is_refused_when_a_key_is_configured() -> None:
    with pytest.raises(CheckpointCorruptError, match="not signed"):
        unframe(frame(b"state", None), "p", None, KEY)


def test_version_1_state_file_is_refused_as_older() -> None:
    data = frame(b"state", KEY)
    older = data[:4] + struct.pack(">H", 1) + data[6:]
    with pytest.raises(CheckpointCorruptError, match="older weirflow"):
        unframe(older, "p", None, None)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:10], "shorter than"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"x", "truncated"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + b"\x00\x09" + b[6:], "format version 9"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0x01]), "checksum mismatch"),
    ],
)
def test_unframe_rejects_corruption(mutate, reason: str) -> None:
    with pytest.raises(CheckpointCorruptError, match=reason) as info:
        unframe(mutate(frame(b"payload bytes", KEY)), "s3://b/job/chk-1/x", None, KEY)
    assert info.value.path == "s3://b/job/chk-1/x"


def test_unframe_rejects_a_file_other_than_the_handle_recorded() -> None:
    with pytest.raises(CheckpointCorruptError, match="recorded in the manifest"):
        unframe(frame(b"one", KEY), "p", checksum_of(b"two"), KEY)


def _manifest(metadata: dict) -> Manifest:
    handle = StateHandle("chk-3/a", HEADER_SIZE + 2, checksum_of(b"ab"))
    task = TaskSnapshot("map[0/2]", {"keyed": handle}, metadata)
    return Manifest("job", 3, 100, 250, "exactly_once", 2, 128, {"map[0/2]": task})


def test_manifest_round_trip_keeps_metadata_types() -> None:
    metadata = {
        "positions": {0: 17, 1: 4},
        "committable": b"txn-9",
        "split": ("topic", 3),
        "splits": {("topic", 3): {1, 2}},
        "plain": {"a": [1, 2.5, None, True]},
        "marker": {"$msgpack": "x"},
    }
    manifest = _manifest(metadata)
    loaded = Manifest.from_bytes(manifest.to_bytes(KEY), "m", KEY)
    assert loaded == manifest
    assert loaded.tasks["map[0/2]"].metadata["split"] == ("topic", 3)
    assert loaded.tasks["map[0/2]"].metadata["splits"] == {("topic", 3): {1, 2}}
    assert loaded.duration_ms == 150
    assert loaded.size == HEADER_SIZE + 2


def test_manifest_detects_an_edited_body() -> None:
    doc = json.loads(_manifest({}).to_bytes(KEY))
    doc["manifest"]["checkpoint_id"] = 4
    with pytest.raises(CheckpointCorruptError, match="checksum mismatch") as info:
        Manifest.from_bytes(json.dumps(doc).encode(), "file:///x/_manifest", KEY)
    assert info.value.path == "file:///x/_manifest"


def _resigned_sha256(doc: dict) -> bytes:
    """What a forger without the key does: recompute the unkeyed checksum."""
    canonical = json.dumps(doc["manifest"], sort_keys=True, separators=(",", ":"))
    doc["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    return json.dumps(doc).encode()


def test_manifest_edit_with_a_recomputed_sha256_fails_the_signature() -> None:
    doc = json.loads(_manifest({}).to_bytes(KEY))
    doc["manifest"]["checkpoint_id"] = 4
    forged = _resigned_sha256(doc)
    assert Manifest.from_bytes(forged, "m", None).checkpoint_id == 4
    with pytest.raises(CheckpointCorruptError, match="signature does not verify"):
        Manifest.from_bytes(forged, "m", KEY)
    doc["hmac"] = None
    with pytest.raises(CheckpointCorruptError, match="not signed"):
        Manifest.from_bytes(_resigned_sha256(doc), "m", KEY)


class _Boom:
    def __reduce__(self) -> tuple:
        raise AssertionError("never pickled in this test")


def test_manifest_never_unpickles_metadata() -> None:
    """Scenario: a forger puts a pickle into a metadata value; loading refuses it unread."""
    payload = b"\x02" + pickle.dumps(OSError("boom"))
    doc = json.loads(_manifest({"x": 1}).to_bytes(None))
    meta = doc["manifest"]["tasks"]["map[0/2]"]["metadata"]
    meta["x"] = {"$msgpack": base64.b64encode(payload).decode()}
    meta["old"] = {"$serde": base64.b64encode(payload).decode()}
    with pytest.raises(CheckpointCorruptError, match="unpickle"):
        Manifest.from_bytes(_resigned_sha256(doc), "m", None)
    del meta["x"]
    loaded = Manifest.from_bytes(_resigned_sha256(doc), "m", None)
    assert loaded.tasks["map[0/2]"].metadata["old"] == meta["old"]


def test_manifest_refuses_metadata_that_needs_pickle() -> None:
    with pytest.raises(SerdeError, match="_Boom"):
        _manifest({"x": [_Boom()]}).to_bytes(KEY)


@pytest.mark.parametrize(("version", "reason"), [(2, "older weirflow"), (4, "newer weirflow")])
def test_manifest_refuses_other_versions(version: int, reason: str) -> None:
    doc = json.loads(_manifest({}).to_bytes(KEY))
    doc["format_version"] = version
    with pytest.raises(CheckpointCorruptError, match=f"format version {version}.*{reason}"):
        Manifest.from_bytes(json.dumps(doc).encode(), "m", KEY)


@pytest.mark.parametrize("data", [b"", b"{not json", b"[]", b'{"manifest": 3}'])
def test_manifest_refuses_garbage(data: bytes) -> None:
    with pytest.raises(CheckpointCorruptError):
        Manifest.from_bytes(data, "m", KEY)


def test_state_file_name_is_safe_and_distinct() -> None:
    a = state_file_name("window[1/4]", "keyed")
    b = state_file_name("window_1_4", "keyed")
    assert is_safe_name(a) and is_safe_name(b)
    assert a != b


@pytest.mark.parametrize("name", ["", "_manifest", "../x", "a//b", ".hidden", "a/./b", "sp ace"])
def test_unsafe_names(name: str) -> None:
    assert not is_safe_name(name)
