"""The manifest: the one file whose presence makes a checkpoint completed.

On disk it is JSON::

    {"format_version": 3, "sha256": "<hex>", "hmac": "<hex>" or null, "manifest": {...}}

``sha256`` and ``hmac`` (HMAC-SHA256 under the checkpoint key) are taken of
the body in canonical form (sorted keys, no spaces). The sha256 catches
accidents; only the hmac proves the body was written by a holder of the
key, and a reader given a key accepts nothing else. State handle paths in
the body are relative to the manifest's root: the job folder for a
checkpoint, the savepoint folder for a savepoint.

A manifest is pure data and is read without running code, with or without
a key: task metadata values JSON cannot hold exactly (bytes, tuples, sets,
int-keyed dicts) are stored as ``{"$msgpack": "<base64>"}`` through
:func:`weirflow.serde.encode_plain`, which never pickles, and are read back
with pickle refused. Version 3 records every operator's snapshot type and
redistribution rule in the task metadata (``kind``: ``keyed``, ``plain`` or
``plain-file``; ``redistribution`` for the last two); older manifests
(version 1 could hold pickles, version 2 left the rule to be guessed from
the operator's kind) are refused with a clear message.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weirflow.checkpoint.errors import CheckpointCorruptError
from weirflow.checkpoint.handles import StateHandle, TaskSnapshot
from weirflow.checkpoint.keys import sign, verify
from weirflow.errors import SerdeError, UnsupportedFormatVersionError
from weirflow.serde import check_format_version, decode, encode_plain

MANIFEST_FORMAT_VERSION = 3
_MSGPACK_KEY = "$msgpack"


@dataclass(frozen=True)
class Manifest:
    """Everything needed to restore a job from one completed checkpoint or savepoint.

    Attributes:
        job: the job's name.
        checkpoint_id: id of the checkpoint (for a savepoint: the checkpoint it was taken as).
        trigger_timestamp_ms: clock time of the trigger, ms since the epoch.
        completed_timestamp_ms: clock time the last task acknowledged, ms since the epoch.
        mode: the checkpoint mode (``exactly_once``...).
        parallelism: the job's parallelism when the checkpoint was taken.
        max_parallelism: number of key groups; a restore must use the same.
        tasks: task id -> what that task acknowledged.
        is_savepoint: whether this is a portable, self-contained savepoint.
        format_version: the manifest format version written.
        operators: stateful operator name → its signature (strings or ``None``:
            kind, key type, window, state type; see ``weirflow.graph.identity``);
            empty in manifests written before signatures were recorded.
    """

    job: str
    checkpoint_id: int
    trigger_timestamp_ms: int
    completed_timestamp_ms: int
    mode: str
    parallelism: int
    max_parallelism: int
    tasks: Mapping[str, TaskSnapshot] = field(default_factory=dict)
    is_savepoint: bool = False
    format_version: int = MANIFEST_FORMAT_VERSION
    operators: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", dict(self.tasks))
        object.__setattr__(self, "operators", {k: dict(v) for k, v in self.operators.items()})

    @property
    def duration_ms(self) -> int:
        """Milliseconds from trigger to completion."""
        return self.completed_timestamp_ms - self.trigger_timestamp_ms

    @property
    def size(self) -> int:
        """Total bytes of all state files."""
        return sum(t.size for t in self.tasks.values())

    @property
    def uses_pickle(self) -> bool:
        """Whether any state file holds pickled values (restoring them needs the key)."""
        return any(t.uses_pickle for t in self.tasks.values())

    def pickled_states(self) -> list[tuple[str, str]]:
        """Return ``(task id, state name)`` of every state file holding pickled values, sorted."""
        return sorted((tid, name) for tid, t in self.tasks.items() for name in t.pickled_states)

    def handles(self) -> list[StateHandle]:
        """Return every state handle of every task, in task then name order."""
        return [
            self.tasks[t].handles[n]
            for t in sorted(self.tasks)
            for n in sorted(self.tasks[t].handles)
        ]

    def map_handles(self, fn: Callable[[StateHandle], StateHandle]) -> Manifest:
        """Return a copy whose every state handle is replaced by ``fn(handle)``.

        Args:
            fn: maps a handle to its replacement (used to rebase paths).

        Returns:
            A new manifest; this one is unchanged.
        """
        tasks = {
            tid: dataclasses.replace(t, handles={n: fn(h) for n, h in t.handles.items()})
            for tid, t in self.tasks.items()
        }
        return dataclasses.replace(self, tasks=tasks)

    def to_bytes(self, key: bytes | None) -> bytes:
        """Serialize to the checksummed, signed JSON file format (UTF-8 bytes).

        Args:
            key: the checkpoint key to sign with, or ``None`` to write no signature.

        Raises:
            SerdeError: a metadata value is not built-in data (see
                :func:`weirflow.serde.is_plain`); manifests never hold pickles.
        """
        body = self._body()
        canonical = _canonical(body)
        return json.dumps(
            {
                "format_version": MANIFEST_FORMAT_VERSION,
                "sha256": hashlib.sha256(canonical).hexdigest(),
                "hmac": sign(key, canonical).hex() if key is not None else None,
                "manifest": body,
            },
            indent=1,
            sort_keys=True,
            ensure_ascii=False,
        ).encode()

    def _body(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "checkpoint_id": self.checkpoint_id,
            "trigger_timestamp_ms": self.trigger_timestamp_ms,
            "completed_timestamp_ms": self.completed_timestamp_ms,
            "duration_ms": self.duration_ms,
            "mode": self.mode,
            "parallelism": self.parallelism,
            "max_parallelism": self.max_parallelism,
            "is_savepoint": self.is_savepoint,
            "size": self.size,
            "tasks": {tid: _task_to_plain(t) for tid, t in self.tasks.items()},
            "operators": self.operators,
        }

    @classmethod
    def from_bytes(cls, data: bytes, path: str, key: bytes | None) -> Manifest:
        """Parse and verify a manifest file; nothing in it is ever unpickled.

        Args:
            data: the file's bytes.
            path: the file's URL, for error messages.
            key: the checkpoint key; when given, the manifest must be signed with it.

        Returns:
            The manifest, handle paths as written (relative to its root).

        Raises:
            CheckpointCorruptError: not JSON, unknown format version, checksum
                mismatch, (with a key) a missing or wrong signature, or a
                missing or mistyped field.
        """
        try:
            outer = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointCorruptError(path, f"not a JSON manifest ({e})") from e
        if not isinstance(outer, dict) or not isinstance(outer.get("manifest"), dict):
            raise CheckpointCorruptError(path, "not a weirflow manifest (no 'manifest' object)")
        version = outer.get("format_version")
        try:
            check_format_version(
                version, MANIFEST_FORMAT_VERSION, path, oldest=MANIFEST_FORMAT_VERSION
            )
        except UnsupportedFormatVersionError as e:
            raise CheckpointCorruptError(path, str(e)) from e
        body = outer["manifest"]
        canonical = _canonical(body)
        if outer.get("sha256") != hashlib.sha256(canonical).hexdigest():
            raise CheckpointCorruptError(path, "checksum mismatch: the manifest was altered")
        if key is not None:
            _check_signature(outer.get("hmac"), canonical, key, path)
        try:
            return cls._from_body(body, version)
        except (KeyError, TypeError, ValueError, SerdeError) as e:
            raise CheckpointCorruptError(path, f"malformed manifest field: {e!r}") from e

    @classmethod
    def _from_body(cls, body: dict[str, Any], version: int) -> Manifest:
        ints = ("checkpoint_id", "trigger_timestamp_ms", "completed_timestamp_ms")
        for name in (*ints, "parallelism", "max_parallelism"):
            if type(body[name]) is not int:
                raise TypeError(f"{name} must be an int, got {body[name]!r}")
        return cls(
            job=str(body["job"]),
            checkpoint_id=body["checkpoint_id"],
            trigger_timestamp_ms=body["trigger_timestamp_ms"],
            completed_timestamp_ms=body["completed_timestamp_ms"],
            mode=str(body["mode"]),
            parallelism=body["parallelism"],
            max_parallelism=body["max_parallelism"],
            tasks={tid: _task_from_plain(tid, t) for tid, t in body["tasks"].items()},
            is_savepoint=bool(body["is_savepoint"]),
            format_version=version,
            operators=_signatures(body.get("operators", {})),
        )


def _signatures(raw: Any) -> dict[str, dict[str, str | None]]:
    if not isinstance(raw, dict):
        raise TypeError(f"operators must be an object, got {raw!r}")
    for name, signature in raw.items():
        if not isinstance(signature, dict) or not all(
            v is None or isinstance(v, str) for v in signature.values()
        ):
            raise TypeError(f"operator {name!r}'s signature must map to strings, got {signature!r}")
    return raw


def check_metadata(metadata: Mapping[str, Any]) -> None:
    """Check that ``metadata`` can be stored in a manifest (built-in data only).

    Raises:
        SerdeError: a value is not built-in data; the message names its key.
    """
    for name, value in metadata.items():
        try:
            _encode_value(value)
        except SerdeError as e:
            raise SerdeError(f"metadata {name!r}: {e}") from e


def _check_signature(mac: object, canonical: bytes, key: bytes, path: str) -> None:
    if not isinstance(mac, str):
        raise CheckpointCorruptError(
            path,
            "not signed, but a checkpoint key is configured: the manifest was written without "
            "a key, or replaced",
        )
    try:
        ok = verify(key, canonical, bytes.fromhex(mac))
    except ValueError:
        ok = False
    if not ok:
        raise CheckpointCorruptError(
            path,
            "signature does not verify under the checkpoint key: the manifest was altered, or "
            "written with another key",
        )


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _json_plain(value: Any) -> bool:
    t = type(value)
    if value is None or t in (bool, int, str):
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(_json_plain(v) for v in value)
    if t is dict:
        # A dict with the marker key would be read back as an encoded value.
        return _MSGPACK_KEY not in value and all(
            type(k) is str and _json_plain(v) for k, v in value.items()
        )
    return False


def _encode_value(value: Any) -> Any:
    if _json_plain(value):
        return value
    return {_MSGPACK_KEY: base64.b64encode(encode_plain(value)).decode("ascii")}


def _decode_value(value: Any) -> Any:
    if type(value) is dict and set(value) == {_MSGPACK_KEY}:
        return decode(base64.b64decode(value[_MSGPACK_KEY], validate=True), allow_pickle=False)
    return value


def _task_to_plain(task: TaskSnapshot) -> dict[str, Any]:
    return {
        "handles": {name: h.to_plain() for name, h in task.handles.items()},
        "metadata": {k: _encode_value(v) for k, v in task.metadata.items()},
        "pickled_states": sorted(task.pickled_states),
        "size": task.size,
    }


def _task_from_plain(task_id: str, data: dict[str, Any]) -> TaskSnapshot:
    pickled = data["pickled_states"]
    if not isinstance(pickled, list) or not all(isinstance(n, str) for n in pickled):
        raise TypeError(f"pickled_states must be a list of names, got {pickled!r}")
    return TaskSnapshot(
        task_id=task_id,
        handles={name: StateHandle.from_plain(h) for name, h in data["handles"].items()},
        metadata={k: _decode_value(v) for k, v in data["metadata"].items()},
        pickled_states=frozenset(pickled),
    )
