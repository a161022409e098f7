"""Serialization of records and state, with declared, versioned formats.

Exports :func:`encode` / :func:`decode` (tagged msgpack or pickle; pickle is
decoded only when the caller allows it), :func:`encode_plain` (never pickles),
:func:`check_format_version` for on-disk headers, and :func:`stable_hash` /
:func:`key_bytes` for placement by key, and :class:`StateSchema` /
:class:`StateMigration` for state values whose class changes between job versions.
"""

from weirflow.serde.codec import (
    TAG_MSGPACK,
    TAG_PICKLE,
    PickleRefusedError,
    check_format_version,
    decode,
    encode,
    encode_plain,
    is_pickled,
    is_plain,
)
from weirflow.serde.hashing import key_bytes, stable_hash
from weirflow.serde.schema import StateMigration, StateSchema, StateSchemaError, declare_schema

__all__ = [
    "TAG_MSGPACK",
    "TAG_PICKLE",
    "PickleRefusedError",
    "StateMigration",
    "StateSchema",
    "StateSchemaError",
    "check_format_version",
    "declare_schema",
    "decode",
    "encode",
    "encode_plain",
    "is_pickled",
    "is_plain",
    "key_bytes",
    "stable_hash",
]
