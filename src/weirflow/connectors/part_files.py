"""Part files of the two-phase-commit file sink: names, states, and the guarded moves between them.

A part file is in-progress, then pending, then committed (or aborted); see
:mod:`weirflow.connectors.files` for the protocol.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from enum import Enum
from typing import IO

from weirflow.errors import WeirflowError

log = logging.getLogger("weirflow.connectors")

HIDDEN = re.compile(r"\.part-(\d+)-([0-9-]+)\.[a-z]+\.(inprogress|pending)")
COMMITTED = re.compile(r"part-(\d+)-(\d+)(?:-\d+)?\.[a-z]+")


class FileSinkError(WeirflowError):
    """The file sink cannot go on: its folder is unusable, a record cannot be
    written in the format, or a committed part file would be overwritten."""


class FileSinkIOError(FileSinkError):
    """A file operation failed (disk full, I/O error); the message names the path.

    Retriable: the condition may clear, and a restart resumes from the last
    completed checkpoint without leaving a partial committed file.
    """

    retriable = True


class PartState(Enum):
    """The life of one part file (a two-phase-commit transaction of the file sink)."""

    IN_PROGRESS = "in_progress"
    CLOSED = "closed"
    PENDING = "pending"
    COMMITTED = "committed"
    ABORTED = "aborted"


_TRANSITIONS: dict[PartState, frozenset[PartState]] = {
    PartState.IN_PROGRESS: frozenset({PartState.CLOSED, PartState.ABORTED}),
    PartState.CLOSED: frozenset({PartState.PENDING, PartState.ABORTED}),
    PartState.PENDING: frozenset({PartState.COMMITTED, PartState.ABORTED}),
    PartState.COMMITTED: frozenset(),
    PartState.ABORTED: frozenset(),
}


def committed_name(subtask: int, checkpoint_id: int, index: int, ext: str) -> str:
    """Return the visible name of a part file.

    Args:
        subtask: the sink subtask that wrote it.
        checkpoint_id: the checkpoint whose completion commits it.
        index: its position among the files of that checkpoint interval (0 first).
        ext: the format's file extension, ``jsonl`` or ``csv``.

    Returns:
        ``part-<subtask>-<checkpoint>.<ext>``, with ``-<index>`` after the
        checkpoint id for ``index`` ≥ 1.
    """
    suffix = f"-{index}" if index else ""
    return f"part-{subtask}-{checkpoint_id}{suffix}.{ext}"


def pending_name(final: str) -> str:
    """Return the hidden pending name of the part file that is committed as ``final``."""
    return f".{final}.pending"


class PartFile:
    """One part file and its state; :meth:`move` is the only way to change the state.

    Attributes:
        folder: the sink's folder.
        name: the file's current name in ``folder``.
        state: where the file is in its life.
        records: records written into it.
    """

    def __init__(self, folder: str, name: str, state: PartState) -> None:
        self.folder = folder
        self.name = name
        self.state = state
        self.records = 0
        self.handle: IO[bytes] | None = None

    @property
    def path(self) -> str:
        """The file's current path."""
        return os.path.join(self.folder, self.name)

    def move(self, to: PartState, new_name: str | None = None) -> None:
        """Change the state, renaming the file to ``new_name`` when given.

        A rename never replaces an existing file (a committed part is never
        overwritten). Committing a pending file whose committed name already
        exists while the pending one does not counts as done (a commit that
        happened before a crash).

        Raises:
            FileSinkError: the transition is not allowed, or the target
                name holds another file.
            FileSinkIOError: the rename failed.
        """
        if to not in _TRANSITIONS[self.state]:
            raise FileSinkError(
                f"part file {self.path}: cannot go from {self.state.value} to {to.value}"
            )
        if new_name is not None and new_name != self.name:
            self._rename(new_name)
        self.state = to

    def abort(self) -> None:
        """Delete the file (it belongs to a checkpoint that never completed); gone is fine.

        Raises:
            FileSinkError: the file is committed.
            FileSinkIOError: the deletion failed.
        """
        self.move(PartState.ABORTED)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise FileSinkIOError(f"cannot delete {self.path}: {e}") from e

    def _rename(self, new_name: str) -> None:
        target = os.path.join(self.folder, new_name)
        source_exists = os.path.exists(self.path)
        if os.path.exists(target):
            if source_exists:
                raise FileSinkError(
                    f"cannot rename {self.path}: {target} already exists (left by an earlier run "
                    "into the same folder?); committed part files are never overwritten"
                )
            self.name = new_name
            return
        try:
            os.rename(self.path, target)
        except OSError as e:
            raise FileSinkIOError(f"cannot rename {self.path} to {target}: {e}") from e
        self.name = new_name


def final_of(pending: str) -> str:
    """The committed name of a pending file name (``.part-….pending`` → ``part-…``)."""
    return pending[1 : -len(".pending")]


def count_records(path: str, csv_format: bool) -> int:
    """Count the records of a committed part file.

    Args:
        path: the file.
        csv_format: the file is CSV (a header line, then rows that may span
            lines inside quotes); else JSON lines.

    Raises:
        FileSinkIOError: the file cannot be read.
    """
    try:
        with open(path, newline="") as f:
            if csv_format:
                return max(0, sum(1 for _ in csv.reader(f)) - 1)
            return sum(1 for _ in f)
    except OSError as e:
        raise FileSinkIOError(f"cannot read the part file {path}: {e}") from e
