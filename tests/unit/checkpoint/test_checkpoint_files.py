"""State file framing and manifest serialization: every corruption is caught and named."""

import json

import pytest

from weirflow.checkpoint import CheckpointCorruptError, Manifest, StateHandle, TaskSnapshot
from weirflow.checkpoint.fileformat import HEADER_SIZE, checksum_of, frame, unframe
from weirflow.checkpoint.handles import is_safe_name, state_file_name


def test_frame_round_trip() -> None:
    payload = b"keyed state \x00\xff"
    assert unframe(frame(payload), "p", checksum_of(payload)) == payload


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
        unframe(mutate(frame(b"payload bytes")), "s3://b/job/chk-1/x", None)
    assert info.value.path == "s3://b/job/chk-1/x"


def test_unframe_rejects_a_file_other_than_the_handle_recorded() -> None:
    with pytest.raises(CheckpointCorruptError, match="recorded in the manifest"):
        unframe(frame(b"one"), "p", checksum_of(b"two"))


def _manifest(metadata: dict) -> Manifest:
    handle = StateHandle("chk-3/a", HEADER_SIZE + 2, checksum_of(b"ab"))
    task = TaskSnapshot("map[0/2]", {"keyed": handle}, metadata)
    return Manifest("job", 3, 100, 250, "exactly_once", 2, 128, {"map[0/2]": task})


def test_manifest_round_trip_keeps_metadata_types() -> None:
    metadata = {
        "positions": {0: 17, 1: 4},
        "committable": b"txn-9",
        "split": ("topic", 3),
        "plain": {"a": [1, 2.5, None, True]},
        "marker": {"$serde": "x"},
    }
    manifest = _manifest(metadata)
    loaded = Manifest.from_bytes(manifest.to_bytes(), "m")
    assert loaded == manifest
    assert loaded.tasks["map[0/2]"].metadata["split"] == ("topic", 3)
    assert loaded.duration_ms == 150
    assert loaded.size == HEADER_SIZE + 2


def test_manifest_detects_an_edited_body() -> None:
    doc = json.loads(_manifest({}).to_bytes())
    doc["manifest"]["checkpoint_id"] = 4
    with pytest.raises(CheckpointCorruptError, match="checksum mismatch") as info:
        Manifest.from_bytes(json.dumps(doc).encode(), "file:///x/_manifest")
    assert info.value.path == "file:///x/_manifest"


def test_manifest_refuses_unknown_version() -> None:
    doc = json.loads(_manifest({}).to_bytes())
    doc["format_version"] = 2
    with pytest.raises(CheckpointCorruptError, match="format version 2 is not supported"):
        Manifest.from_bytes(json.dumps(doc).encode(), "m")


@pytest.mark.parametrize("data", [b"", b"{not json", b"[]", b'{"manifest": 3}'])
def test_manifest_refuses_garbage(data: bytes) -> None:
    with pytest.raises(CheckpointCorruptError):
        Manifest.from_bytes(data, "m")


def test_state_file_name_is_safe_and_distinct() -> None:
    a = state_file_name("window[1/4]", "keyed")
    b = state_file_name("window_1_4", "keyed")
    assert is_safe_name(a) and is_safe_name(b)
    assert a != b


@pytest.mark.parametrize("name", ["", "_manifest", "../x", "a//b", ".hidden", "a/./b", "sp ace"])
def test_unsafe_names(name: str) -> None:
    assert not is_safe_name(name)
