"""The checkpoint key: the secret that signs a job's checkpoint files.

Every file a job writes to checkpoint storage (state files and manifests)
carries an HMAC-SHA256 under this key, and pickled state is decoded only
from files whose signature verified. Whoever can write the storage but does
not hold the key can destroy checkpoints, never make a restore run code.

A key is at least 16 random bytes. Wherever it is written down (the
``WEIRFLOW_CHECKPOINT_KEY`` environment variable, a key file) it is hex
text: a key file holds one line of hex digits and must not be readable by
group or others (mode 0600), like an SSH private key.

:func:`load_checkpoint_key` is the one place that finds a given key, for
the coordinator and for every worker, local or on another machine: they all
read the same key file or environment variable (:mod:`.jobkey` adds the
default key file next to a local checkpoint folder). The key never travels on a
command line (other users of the machine can read those).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from weirflow.errors import ConfigError

KEY_ENV = "WEIRFLOW_CHECKPOINT_KEY"
"""Environment variable holding the key as hex text."""
KEY_FILE_ENV = "WEIRFLOW_CHECKPOINT_KEY_FILE"
"""Environment variable holding the path of a key file."""
MIN_KEY_BYTES = 16
GENERATED_KEY_BYTES = 32
MAC_SIZE = 32


def check_key(key: object, where: str) -> bytes:
    """Return ``key`` if it is usable as a checkpoint key.

    Args:
        key: the candidate key.
        where: where it came from, for the message (``CheckpointConfig.key``).

    Returns:
        ``key`` as ``bytes``.

    Raises:
        ConfigError: ``key`` is not bytes, or shorter than 16 bytes.
    """
    if not isinstance(key, bytes | bytearray):
        raise ConfigError(f"{where} must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where} is {len(key)} bytes; a checkpoint key needs at least {MIN_KEY_BYTES} "
            "random bytes (make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return bytes(key)


def parse_key_text(text: str, where: str) -> bytes:
    """Parse a key written as hex text.

    Args:
        text: hex digits, surrounding whitespace allowed.
        where: where the text came from, for the message.

    Returns:
        The key bytes.

    Raises:
        ConfigError: not hex, or shorter than 16 bytes.
    """
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(
            f"{where} does not hold a checkpoint key: expected hex digits "
            "(make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        ) from None
    return check_key(key, where)


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file.

    Args:
        path: the key file (one line of hex digits, mode 0600).

    Returns:
        The key bytes.

    Raises:
        ConfigError: the file is missing or unreadable, readable by group or
            others, or does not hold a key.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"checkpoint key file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read checkpoint key file {p}: {e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"checkpoint key file {p} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {p}"
        )
    return parse_key_text(text, f"checkpoint key file {p}")


def create_key_file(path: str | os.PathLike[str]) -> bytes:
    """Create a key file holding a new random key, readable by its owner only.

    Args:
        path: where to create it; missing parent folders are created (mode 0700).

    Returns:
        The new key.

    Raises:
        ConfigError: the file exists already or cannot be created.
    """
    p = Path(path)
    key = secrets.token_bytes(GENERATED_KEY_BYTES)
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written in full under a private name, then linked into place, so that a
        # process racing to create the same file never reads it half written.
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(key.hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, p)
        finally:
            os.unlink(tmp)
    except FileExistsError:
        raise ConfigError(f"checkpoint key file {p} exists already") from None
    except OSError as e:
        raise ConfigError(f"cannot create checkpoint key file {p}: {e}") from None
    return key


@dataclass(frozen=True)
class JobKey:
    """The key a job's checkpoints are signed with, and where it came from.

    Attributes:
        key: the key, or ``None`` when there is none (checkpoints unsigned).
        path: the key file it was read from or written to, if any.
        created: whether the key file was generated just now.
    """

    key: bytes | None
    path: Path | None = None
    created: bool = False


def load_checkpoint_key(
    explicit: bytes | None = None,
    key_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes | None:
    """Find the checkpoint key of a job, in this order.

    1. ``explicit`` (``CheckpointConfig.key``);
    2. ``key_file`` (``--checkpoint-key-file``);
    3. the ``WEIRFLOW_CHECKPOINT_KEY`` environment variable (hex);
    4. the key file named by ``WEIRFLOW_CHECKPOINT_KEY_FILE``.

    Args:
        explicit: a key given in code.
        key_file: a key file given on the command line.
        env: the environment to read (default: ``os.environ``).

    Returns:
        The key, or ``None`` when none of them is set.

    Raises:
        ConfigError: a given key or key file is unusable (see :func:`read_key_file`).
    """
    return find_key(explicit, key_file, os.environ if env is None else env).key


def find_key(explicit: bytes | None, key_file: str | None, env: Mapping[str, str]) -> JobKey:
    """Like :func:`load_checkpoint_key`, also saying which key file the key came from."""
    if explicit is not None:
        return JobKey(check_key(explicit, "CheckpointConfig.key"))
    if key_file:
        return JobKey(read_key_file(key_file), Path(key_file))
    if env.get(KEY_ENV):
        return JobKey(parse_key_text(env[KEY_ENV], f"${KEY_ENV}"))
    if env.get(KEY_FILE_ENV):
        return JobKey(read_key_file(env[KEY_FILE_ENV]), Path(env[KEY_FILE_ENV]))
    return JobKey(None)


def sign(key: bytes, data: bytes) -> bytes:
    """Return the HMAC-SHA256 (32 bytes) of ``data`` under ``key``."""
    return hmac.new(key, data, sha256).digest()


def verify(key: bytes, data: bytes, mac: bytes) -> bool:
    """Return whether ``mac`` is the HMAC-SHA256 of ``data`` under ``key`` (constant time)."""
    return hmac.compare_digest(sign(key, data), mac)
