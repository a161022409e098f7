"""Local recovery's check of local copies: each file hashed once per restore, a rewritten
or missing file never taken."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weirflow.checkpoint import StateHandle, checksum_of
from weirflow.runtime import local_digests, snapshot_files
from weirflow.runtime.snapshot_files import _matches, _verify_all


def _handles(folder: Path, contents: dict[str, bytes]) -> dict[str, StateHandle]:
    folder.mkdir(exist_ok=True)
    out = {}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        out[name] = StateHandle(f"shared/{name}", len(data), checksum_of(data))
    return out


def test_only_files_with_the_recorded_checksum_are_taken_locally(tmp_path: Path) -> None:
    contents = {f"{i:06d}.sst": os.urandom(50_000 + i) for i in range(12)}
    handles = _handles(tmp_path, contents)
    (tmp_path / "000003.sst").write_bytes(b"rotten")
    (tmp_path / "000007.sst").unlink()
    assert _verify_all(tmp_path, handles) == set(contents) - {"000003.sst", "000007.sst"}


def test_a_verdict_is_reused_only_for_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handles = _handles(tmp_path, {"a.sst": b"x" * 10_000})
    hashed: list[Path] = []
    real = snapshot_files.both_digests

    def counting(path: Path) -> tuple[str, str]:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(snapshot_files, "both_digests", counting)
    path = tmp_path / "a.sst"
    assert _matches(path, handles["a.sst"]) and _matches(path, handles["a.sst"])
    assert hashed == [path]
    # the same size, content changed, written later: a new identity, hashed again
    stat = path.stat()
    path.write_bytes(b"y" * 10_000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not _matches(path, handles["a.sst"])
    assert hashed == [path, path]
    # a verdict older than its lifetime is not trusted
    monkeypatch.setattr(snapshot_files, "_VERIFIED_FOR_S", 0.0)
    assert not _matches(path, handles["a.sst"])
    assert len(hashed) == 3


def test_a_digests_file_pairs_only_what_one_content_gave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: three uploaded files; one changes while its XXH3 is computed, one's
    handle records a SHA-256 its content does not have: only the intact one is paired."""
    monkeypatch.setattr(local_digests, "_known", {})
    contents = {"a.sst": b"a" * 5000, "b.sst": b"b" * 5000, "c.sst": b"c" * 5000}
    handles = _handles(tmp_path, contents)
    checksums = {n: h.checksum for n, h in handles.items()}
    checksums["c.sst"] = checksum_of(b"not c")
    real = local_digests.fast_digest

    def changing(path: Path) -> str:
        digest = real(path)
        if path.name == "b.sst":
            path.write_bytes(b"B" * 5001)  # a new identity: the pair is not recorded
        return digest

    monkeypatch.setattr(local_digests, "fast_digest", changing)
    local_digests.write_digests(tmp_path, checksums, frozenset({"a.sst", "b.sst"}))
    assert local_digests.recorded_fast_digest(tmp_path, "a.sst", checksums["a.sst"]) == real(
        tmp_path / "a.sst"
    )
    assert local_digests.recorded_fast_digest(tmp_path, "b.sst", checksums["b.sst"]) is None
    assert local_digests.recorded_fast_digest(tmp_path, "c.sst", checksums["c.sst"]) is None
    # the entry answers only for the SHA-256 it was recorded with
    assert local_digests.recorded_fast_digest(tmp_path, "a.sst", checksums["c.sst"]) is None


@pytest.mark.parametrize(
    "text", ["{", "[]", '{"version": 99, "files": {}}', '{"version": 1, "files": {"a.sst": 3}}']
)
def test_a_malformed_digests_file_is_no_digests_file(tmp_path: Path, text: str) -> None:
    handles = _handles(tmp_path, {"a.sst": b"a" * 100})
    (tmp_path / local_digests.DIGESTS_FILE).write_text(text)
    assert local_digests.recorded_fast_digest(tmp_path, "a.sst", handles["a.sst"].checksum) is None
    assert _matches(tmp_path / "a.sst", handles["a.sst"])
