"""The current key of a keyed state backend, shared with the state objects it binds."""

from __future__ import annotations

from typing import Any

from weirflow.errors import StateError

NO_KEY: Any = object()
"""Sentinel for "no current key yet"; ``None`` is a legitimate key."""


class KeyContext:
    """Mutable holder of the current key and its key group.

    The backend writes it in ``set_current_key``; bound state objects read it
    on every access, so one object per state name serves every key.

    Attributes:
        key: the current key, or :data:`NO_KEY`.
        key_group: the current key's group (meaningless while ``key is NO_KEY``).
    """

    __slots__ = ("key", "key_group")

    def __init__(self) -> None:
        self.key: Any = NO_KEY
        self.key_group: int = -1

    def require(self, what: str) -> tuple[int, Any]:
        """Return ``(key_group, key)``.

        Args:
            what: the state being accessed, for the message.

        Raises:
            StateError: no current key has been set.
        """
        key = self.key
        if key is NO_KEY:
            raise StateError(
                f"{what} was accessed without a current key; keyed state is only usable "
                "while processing a record or timer of a keyed stream"
            )
        return self.key_group, key
