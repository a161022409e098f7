"""Finding the checkpoint key: code, command line, environment, the default key file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from weirflow import CheckpointConfig
from weirflow.checkpoint import (
    KEY_ENV,
    KEY_FILE_ENV,
    create_key_file,
    default_key_file,
    load_checkpoint_key,
    read_key_file,
    resolve_job_key,
)
from weirflow.errors import ConfigError

KEY = bytes(range(32))


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)


def key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_order_is_code_then_key_file_then_environment(tmp_path: Path) -> None:
    f = key_file(tmp_path / "k", (b"f" * 16).hex())
    g = key_file(tmp_path / "g", (b"g" * 16).hex())
    env = {KEY_ENV: (b"e" * 16).hex(), KEY_FILE_ENV: str(g)}
    assert load_checkpoint_key(KEY, str(f), env) == KEY
    assert load_checkpoint_key(None, str(f), env) == b"f" * 16
    assert load_checkpoint_key(None, None, env) == b"e" * 16
    assert load_checkpoint_key(None, None, {KEY_FILE_ENV: str(g), KEY_ENV: ""}) == b"g" * 16
    assert load_checkpoint_key(None, None, {}) is None


def test_bad_keys_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        CheckpointConfig(key=b"short")
    with pytest.raises(ConfigError, match="hex digits"):
        load_checkpoint_key(None, None, {KEY_ENV: "not hex"})
    with pytest.raises(ConfigError, match="chmod 600"):
        read_key_file(key_file(tmp_path / "open", KEY.hex(), 0o644))
    with pytest.raises(ConfigError, match="does not exist"):
        read_key_file(tmp_path / "missing")


def test_key_is_not_in_the_config_repr() -> None:
    assert KEY.hex() not in repr(CheckpointConfig(key=KEY))
    assert repr(KEY) not in repr(CheckpointConfig(key=KEY))


def test_created_key_file_is_private_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "job.key"
    key = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_key_file(path) == key and len(key) == 32
    with pytest.raises(ConfigError, match="exists already"):
        create_key_file(path)


def test_default_key_file_sits_next_to_a_local_folder_only(tmp_path: Path) -> None:
    assert default_key_file(str(tmp_path / "chk"), "job") == tmp_path / "checkpoint-keys/job.key"
    assert default_key_file(f"file://{tmp_path}/chk", "job") == (
        tmp_path / "checkpoint-keys/job.key"
    )
    assert default_key_file("s3://bucket/chk", "job") is None
    assert default_key_file("memory://chk", "job") is None


def test_resolve_generates_once_then_reuses(tmp_path: Path) -> None:
    storage = str(tmp_path / "chk")
    assert resolve_job_key(None, storage, "job", create=False).key is None
    made = resolve_job_key(None, storage, "job", create=True)
    assert made.created and made.path == tmp_path / "checkpoint-keys/job.key"
    again = resolve_job_key(None, storage, "job", create=True)
    assert not again.created and again.key == made.key
    assert resolve_job_key(KEY, storage, "job", create=True).key == KEY
    assert resolve_job_key(None, "memory://x", "job", create=True).key is None


def test_environment_key_file_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = key_file(tmp_path / "k", KEY.hex() + "\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(f))
    found = resolve_job_key(None, str(tmp_path / "chk"), "job", create=True)
    assert found.key == KEY and found.path == f and not found.created
    assert not (tmp_path / "checkpoint-keys").exists()
    assert os.environ[KEY_FILE_ENV] == str(f)


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path: Path) -> None:
    """Scenario: several processes of one job start at once and none finds a key file."""
    code = (
        "import sys; from weirflow.checkpoint import resolve_job_key; "
        "print(resolve_job_key(None, sys.argv[1], 'job', create=True).key.hex())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIRFLOW_CHECKPOINT_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "chk")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert keys == {read_key_file(tmp_path / "checkpoint-keys" / "job.key").hex()}
    assert [p.name for p in (tmp_path / "checkpoint-keys").iterdir()] == ["job.key"]
