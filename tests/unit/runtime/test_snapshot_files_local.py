"""Local recovery's check of local copies: each file hashed once per restore, a rewritten
or missing file never taken."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weirflow.checkpoint import StateHandle, checksum_of
from weirflow.runtime import snapshot_files
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
    real = snapshot_files.checksum_of_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(snapshot_files, "checksum_of_file", counting)
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
