"""The class of a keyed operator's keys: recorded in its snapshots, compared on restore.

A key's key group is the hash of its encoded bytes, and a Struct or
dataclass key is encoded with its schema version and every field with its
declared type. A key class that changed between two job versions (even a
field added with a default) moves every key to another key group, where its
restored state is not found, without a word. When the key selector declares
its return type, ``upgrade-check`` and the restore plan compare the class
(:func:`weirflow.serde.schema_check.key_class_change`); otherwise only a key
shows the class, so the operator records the class of the first key it
sees and, restored, refuses the first key whose class changed, before that
key's record is processed.
"""

from __future__ import annotations

from typing import Any

from weirflow.serde import StateSchemaError
from weirflow.serde.schema_check import key_class_change, schema_record


class KeyClassCheck:
    """One keyed operator subtask's key class, as a :func:`schema_record` (or ``None``).

    Args:
        operator: the operator's state id, for messages.

    Attributes:
        record: the key class to record in the next snapshot: the restored
            one until a key is seen, then the class of the first key seen.
        pending: whether no key has been seen since ``open`` (the hot path
            tests only this).
    """

    __slots__ = ("_operator", "_restored", "pending", "record")

    def __init__(self, operator: str) -> None:
        self._operator = operator
        self._restored: str | None = None
        self.record: str | None = None
        self.pending = True

    def restore(self, recorded: str | None) -> None:
        """Take the key class the restored snapshot recorded."""
        self._restored = self.record = recorded

    def see(self, key: Any) -> None:
        """Record the class of the first key seen since ``open``.

        Raises:
            StateSchemaError: the key's class is the restored key class changed
                (the message names the operator, the class and the change).
        """
        self.pending = False
        now = schema_record(type(key))
        change = key_class_change(self._restored, now)
        if change is not None:
            raise StateSchemaError(f"operator {self._operator!r}: {change}")
        if now is not None:
            self.record = now
