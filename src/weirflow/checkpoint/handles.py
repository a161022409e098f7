"""State handles (files in checkpoint storage) and task snapshots (one task's acknowledgement)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+@-]*")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._=+@-]")


@dataclass(frozen=True)
class StateHandle:
    """A file written into checkpoint storage.

    Attributes:
        path: where the file is. Relative (``chk-7/window_1_4.ks``) to the job
            folder for handles returned by ``write_state``; an absolute URL
            (``s3://b/p/job/chk-7/...``, ``file:///...``) for handles of a
            loaded manifest or savepoint.
        size: length of the whole file in bytes (header included).
        checksum: ``"sha256:<hex>"`` of the payload, also stored in the file header.
    """

    path: str
    size: int
    checksum: str

    def to_plain(self) -> dict[str, Any]:
        """Return the handle as a JSON-ready dict with keys ``path``, ``size``, ``checksum``."""
        return {"path": self.path, "size": self.size, "checksum": self.checksum}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> StateHandle:
        """Build a handle from :meth:`to_plain` output.

        Raises:
            KeyError, TypeError: ``data`` lacks a field or has a wrong type.
        """
        path, size, checksum = data["path"], data["size"], data["checksum"]
        if not isinstance(path, str) or type(size) is not int or not isinstance(checksum, str):
            raise TypeError(f"malformed state handle {dict(data)!r}")
        return cls(path, size, checksum)


@dataclass(frozen=True)
class TaskSnapshot:
    """What one task acknowledges for one checkpoint.

    Attributes:
        task_id: the task's id, opaque to this layer (``window[1/4]``).
        handles: named state files of the task (operator state, keyed state
            per key-group blob, source positions...).
        metadata: small plain data kept inline in the manifest: source split
            positions, sink committables, key-group index, state sizes.
            Values must be built-in data (``weirflow.serde.is_plain``):
            manifests never hold pickles.
        pickled_states: names (keys of ``handles``) of the state files
            that hold pickled values; restoring them needs the checkpoint key.
    """

    task_id: str
    handles: Mapping[str, StateHandle] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pickled_states: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Plain dict copies: the caller's mappings may change later, and
        # snapshots must pickle to cross process boundaries.
        object.__setattr__(self, "handles", dict(self.handles))
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "pickled_states", frozenset(self.pickled_states))

    @property
    def uses_pickle(self) -> bool:
        """Whether any of the task's state files holds pickled values."""
        return bool(self.pickled_states)

    @property
    def size(self) -> int:
        """Total bytes of the task's state files."""
        return sum(h.size for h in self.handles.values())


def is_safe_name(name: str) -> bool:
    """Return whether ``name`` may be used as a state file name in checkpoint storage.

    Args:
        name: ``/``-separated segments, each of letters, digits and ``._=+@-``,
            not starting with a dot (so no ``..`` and no hidden files).

    Returns:
        ``True`` when every segment is safe and the name is not ``_manifest``.
    """
    if name == "_manifest" or not name:
        return False
    return all(_SAFE_SEGMENT.fullmatch(segment) for segment in name.split("/"))


def state_file_name(task_id: str, state: str) -> str:
    """Build a safe, unique state file name from a task id and a state name.

    Task ids such as ``window[1/4]`` hold characters that object stores and
    glob-expanding file systems treat specially, so they are replaced; a short
    hash of the original keeps distinct ids distinct.

    Args:
        task_id: the task's id.
        state: the name of the state within the task (``keyed``, ``source``).

    Returns:
        A name accepted by :func:`is_safe_name`, e.g. ``window_1_4_-3f2a9c1b.keyed``.
    """
    digest = hashlib.sha256(f"{task_id}\0{state}".encode()).hexdigest()[:8]
    task_part = _UNSAFE_CHAR.sub("_", task_id).strip("_.") or "task"
    state_part = _UNSAFE_CHAR.sub("_", state).strip("_.") or "state"
    return f"{task_part}-{digest}.{state_part}"
