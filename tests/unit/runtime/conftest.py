"""Fixtures shared by the runtime's unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fsspec
import pytest

from weirflow.checkpoint import KEY_ENV, KEY_FILE_ENV


@pytest.fixture
def keyless_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Remote-like checkpoint storage (fsspec memory, no default key file) with no
    checkpoint key in the environment: only state that needs no pickle can be written."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    name = f"memory://keyless-{uuid.uuid4().hex}"
    yield name
    fs = fsspec.filesystem("memory")
    if fs.exists(name):
        fs.rm(name, recursive=True)
