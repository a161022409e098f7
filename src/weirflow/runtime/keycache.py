"""A bounded memo of key → key group (or target subtask) for the hot path.

Hashing a key's bytes costs several dict lookups' worth, and streams repeat
their keys, so operators and partitioners remember the answer. The memo is
cleared when it outgrows :data:`KEY_CACHE_LIMIT` entries, which bounds its
memory for high-cardinality keys.
"""

from __future__ import annotations

from typing import Any

from weirflow.state import key_group_for_key

KEY_CACHE_LIMIT = 1 << 16


class KeyGroupCache:
    """Calling it maps a key to its key group; ``groups`` is the memo for inline lookups.

    Args:
        max_parallelism: number of key groups.
    """

    __slots__ = ("groups", "max_parallelism")

    def __init__(self, max_parallelism: int) -> None:
        self.groups: dict[Any, int] = {}
        self.max_parallelism = max_parallelism

    def __call__(self, key: Any) -> int:
        """Return ``key``'s key group (``stable_hash(key) % max_parallelism``)."""
        kg = self.groups.get(key)
        if kg is None:
            if len(self.groups) > KEY_CACHE_LIMIT:
                self.groups.clear()
            kg = key_group_for_key(key, self.max_parallelism)
            self.groups[key] = kg
        return kg
