"""A file sink with two-phase commit: part files that appear only once their checkpoint completes.

The protocol follows Apache Flink's ``FileSink`` (part files moving from
in-progress to pending to finished). Every sink subtask writes its records
into one hidden **in-progress** file at a time, in the sink's folder:

1. records go into ``.part-<subtask>-<seq>.<ext>.inprogress`` (with
   ``rolling_records``, a full file is closed and a new one opened; closed
   files wait, still hidden, for the next barrier);
2. on ``pre_commit(n)`` the open file is flushed, fsynced and closed, and
   every file of the interval is renamed to a hidden **pending** name
   ``.part-<subtask>-<n>[-<k>].<ext>.pending``; the folder is fsynced; the
   committable in checkpoint ``n`` lists every pending, uncommitted file;
3. on ``commit(n)`` every pending file up to ``n`` is renamed to its
   **committed** name ``part-<subtask>-<n>[-<k>].<ext>`` (``-<k>`` only for
   the second and later files of one interval); a committed file already in
   place means the commit happened before, so commit is idempotent;
4. on restore, the pending files of the restored checkpoint are committed
   and every other hidden file of the restored subtasks is deleted: it
   belongs to a checkpoint that never completed. Committed files of
   checkpoints newer than the restored one mean their output would be
   written again; :meth:`FileSink.commits_after` reports them, so that the
   restore is refused unless the run allows duplicates.

Invariants: a committed name only ever appears through one atomic rename of
a complete, fsynced file, so a reader of the folder never sees a partial
part; hidden names start with ``.``, so readers that skip hidden files see
committed parts only. Sink subtask ``i`` of ``p`` owns the hidden files of
every subtask ``s`` with ``s % p == i`` (the runtime hands the checkpointed
state of old subtask ``s`` to new subtask ``s % p``), which makes restores
at another parallelism clean up after every old subtask.

The calls that create, rename and sync files run behind the sink's
:class:`~weirflow.connectors.Resilience` (retries with backoff, a circuit
breaker): a folder that becomes unwritable for a while (a network share
that drops, a read-only remount) holds the job back until it is writable
again, instead of failing it. Only steps that are safe to run again are
retried: opening a new part file, one rename (a rename whose target already
exists counts as done), the folder fsync. Appending bytes to an open file is
not retried (a partial append run again would duplicate bytes): it fails
the task, and the restore deletes the in-progress file.

One folder holds the output of one sink; object stores are not supported
yet (the protocol relies on the local file system's atomic rename and fsync).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from weirflow.connectors.base import LaterCommits, SinkRestore
from weirflow.connectors.file_formats import (
    FileFormat,
    csv_bytes,
    csv_columns,
    csv_lines,
    jsonl_bytes,
)
from weirflow.connectors.part_files import (
    COMMITTED,
    HIDDEN,
    FileSinkError,
    FileSinkIOError,
    PartFile,
    PartState,
    committed_name,
    count_records,
    final_of,
    pending_name,
)
from weirflow.connectors.resilience import Resilience
from weirflow.connectors.two_phase import TwoPhaseCommitWriter
from weirflow.errors import ConfigError

log = logging.getLogger("weirflow.connectors")


class FileSink:
    """Writes records to part files in a local folder, exactly once with checkpoints.

    See the module docs for the file life cycle. With checkpoints, a record
    becomes visible when the checkpoint after it completes; without (a
    bounded ``flow.run()`` with no checkpoint config), everything is
    committed when the input ends, as checkpoint 0.

    Args:
        path: the output folder (created if missing). One sink per folder.
            Local file systems only: object stores are not supported yet.
        format: ``jsonl`` (one JSON document per line) or ``csv`` (a header
            line in every part file, then one row per record).
        encode: for ``jsonl``, ``record -> bytes | str``, one line without
            its newline (default: JSON via msgspec); for ``csv``,
            ``record -> Mapping | Sequence``, the row (default: the record
            itself).
        columns: ``csv`` column names, in order; default: the keys of the
            first row of each part file (rows must then be mappings).
        rolling_records: start a new part file after this many records
            (≥ 1); ``None``: one file per subtask and checkpoint interval.
        resilience: retries and circuit breaker of the file system calls
            (default: :class:`Resilience`); its ``startup_ramp`` paces a
            restored writer.

    Raises:
        ConfigError: an unknown format, ``columns`` with ``jsonl``, or
            ``rolling_records`` < 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: FileFormat = "jsonl",
        encode: Callable[[Any], Any] | None = None,
        columns: Sequence[str] | None = None,
        rolling_records: int | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        if format not in ("jsonl", "csv"):
            raise ConfigError(f"FileSink format must be 'jsonl' or 'csv', got {format!r}")
        if columns is not None and format != "csv":
            raise ConfigError("FileSink columns= applies to format='csv' only")
        if rolling_records is not None and rolling_records < 1:
            raise ConfigError(f"FileSink rolling_records must be ≥ 1, got {rolling_records}")
        self.path = os.fspath(path)
        self.format = format
        self.encode = encode
        self.columns = list(columns) if columns is not None else None
        self.rolling_records = rolling_records
        self.resilience = resilience or Resilience()

    def commits_after(self, at: SinkRestore) -> LaterCommits | None:
        """Find the committed part files of checkpoints after ``at.checkpoint_id`` that
        sink subtask ``at.subtask`` of ``at.parallelism`` owns, and count their records.

        Returns:
            ``None`` when there are none (or the folder does not exist yet).

        Raises:
            FileSinkIOError: a part file cannot be read.
        """
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return None
        newer = {
            name: int(match.group(2))
            for name in names
            if (match := COMMITTED.fullmatch(name))
            and int(match.group(1)) % at.parallelism == at.subtask
            and int(match.group(2)) > at.checkpoint_id
        }
        if not newer:
            return None
        records = sum(
            count_records(os.path.join(self.path, name), self.format == "csv") for name in newer
        )
        return LaterCommits(max(newer.values()), records, f"folder {self.path}")

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> FileSinkWriter:
        """Create one sink subtask's writer; it resolves the restored checkpoint's part files.

        Args:
            job: the job name (unused: the folder identifies the sink).
            operator: the sink operator's name, for log lines (``results[0/2]``).
            subtask: the subtask index.
            parallelism: the number of sink subtasks.
            restored: old subtask → what its ``pre_commit`` returned at the
                restored checkpoint; ``None`` on a fresh start.

        Raises:
            FileSinkError: the folder cannot be created or written, or a
                restored pending file is missing (its output would be lost).
            FileSinkIOError: a rename or deletion failed.
        """
        return FileSinkWriter(self, subtask, parallelism, restored, operator)


class FileSinkWriter(TwoPhaseCommitWriter[list[PartFile]]):
    """One sink subtask's writer (see :class:`FileSink` and the module docs).

    Args:
        sink: the sink's configuration.
        subtask: the subtask index.
        parallelism: the number of sink subtasks.
        restored: old subtask → its committable at the restored checkpoint, or ``None``.
        operator: the sink operator's name, for log lines.

    Raises:
        FileSinkError, FileSinkIOError: as :meth:`FileSink.create_writer`.
    """

    def __init__(
        self,
        sink: FileSink,
        subtask: int,
        parallelism: int,
        restored: Mapping[int, Any] | None,
        operator: str = "sink",
    ) -> None:
        name = f"{operator}[{subtask}/{parallelism}]"
        super().__init__(
            guard=sink.resilience.guard(name, _not_retriable),
            ramp=sink.resilience.ramp() if restored is not None else None,
        )
        self.sink = sink
        self.name = name
        self.folder = sink.path
        self.subtask = subtask
        self.parallelism = parallelism
        self.ext = sink.format
        self._seq = 0
        self._open: PartFile | None = None
        self._csv_columns: list[str] | None = None
        self._closed: list[PartFile] = []
        self._prepare_folder()
        if restored is None:
            self._refuse_earlier_output()
        self.restore(restored or {})

    # -- opening and restore -------------------------------------------------

    def _prepare_folder(self) -> None:
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise FileSinkError(f"cannot create the FileSink folder {self.folder}: {e}") from e
        if not os.path.isdir(self.folder) or not os.access(self.folder, os.W_OK | os.X_OK):
            raise FileSinkError(f"the FileSink folder {self.folder} is not a writable folder")

    def _restore(self, restored: Mapping[int, Any]) -> None:
        """Resolve what earlier attempts left behind.

        Steps:
            1. commit every pending file named in the restored committables;
            2. delete every other hidden file of the subtasks this one owns.
        """
        self._commit_restored(restored)
        self._delete_uncommitted()

    def _commit_restored(self, restored: Mapping[int, Any]) -> None:
        newest = -1
        for state in restored.values():
            if not state:
                continue
            newest = max(newest, int(state["checkpoint"]))
            for final in state["pending"]:
                if not isinstance(final, str) or not COMMITTED.fullmatch(final):
                    raise FileSinkError(f"restored committable {final!r} is not a part file name")
                part = PartFile(self.folder, pending_name(final), PartState.PENDING)
                if not os.path.exists(part.path) and not os.path.exists(
                    os.path.join(self.folder, final)
                ):
                    raise FileSinkError(
                        f"pending part file {part.path} of a completed checkpoint is gone and "
                        f"{final} was never committed: its records are lost; was the folder "
                        "cleaned while the job ran?"
                    )
                if os.path.exists(part.path):
                    log.info("%s: committing %s on restore", self.name, part.path)
                part.move(PartState.COMMITTED, final)
        self.last_checkpoint_id = max(self.last_checkpoint_id, newest)
        self._fsync_folder()

    def _owned(self, subtask: int) -> bool:
        return subtask % self.parallelism == self.subtask

    def _delete_uncommitted(self) -> None:
        for name in self._listdir():
            match = HIDDEN.fullmatch(name)
            if match and self._owned(int(match.group(1))):
                state = PartState.PENDING if match.group(3) == "pending" else PartState.CLOSED
                part = PartFile(self.folder, name, state)
                log.info("%s: deleting %s (never committed)", self.name, part.path)
                part.abort()
        self._fsync_folder()

    def _refuse_earlier_output(self) -> None:
        """A fresh start must not mix its parts with the committed parts of an earlier run.

        Raises:
            ConfigError: the folder holds committed parts of a subtask this one owns.
        """
        for name in self._listdir():
            match = COMMITTED.fullmatch(name)
            if match and self._owned(int(match.group(1))):
                raise ConfigError(
                    f"{self.name}: {os.path.join(self.folder, name)} is output of an earlier "
                    "run; a fresh start needs an empty FileSink folder (or restore the run "
                    "that wrote it with --restore latest)"
                )

    def _listdir(self) -> list[str]:
        try:
            return sorted(os.listdir(self.folder))
        except OSError as e:
            raise FileSinkIOError(f"cannot list the FileSink folder {self.folder}: {e}") from e

    # -- writing ------------------------------------------------------------

    def _write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Append records to the in-progress file, rolling to a new one when full.

        Args:
            values: the records.
            timestamps: event times in ms (not written).

        Raises:
            FileSinkError: a record cannot be written in the sink's format.
            FileSinkIOError: the write failed (disk full names the file).
        """
        limit = self.sink.rolling_records
        start = 0
        while start < len(values):
            part = self._open or self._new_part(values[start])
            take = (
                len(values) - start
                if limit is None
                else min(limit - part.records, len(values) - start)
            )
            self._append(part, values[start : start + take])
            start += take
            if limit is not None and part.records >= limit:
                self._close_open()

    def _new_part(self, first: Any) -> PartFile:
        name = f".part-{self.subtask}-{self._seq}.{self.ext}.inprogress"
        self._seq += 1
        part = PartFile(self.folder, name, PartState.IN_PROGRESS)

        def create() -> None:
            try:
                part.handle = open(part.path, "xb")  # noqa: SIM115  (closed in _close_open)
            except OSError as e:
                raise FileSinkIOError(f"cannot create part file {part.path}: {e}") from e

        self._call_guarded(create)
        self._open = part
        if self.ext == "csv":
            self._csv_columns = csv_columns(self.sink.columns, self.sink.encode, first, part.path)
            self._write_bytes(part, csv_lines([self._csv_columns]))
        return part

    def _append(self, part: PartFile, values: list[Any]) -> None:
        if self.ext == "csv":
            assert self._csv_columns is not None
            data = csv_bytes(values, self._csv_columns, self.sink.encode, part.path)
        else:
            data = jsonl_bytes(values, self.sink.encode, part.path)
        self._write_bytes(part, data)
        part.records += len(values)

    def _write_bytes(self, part: PartFile, data: bytes) -> None:
        assert part.handle is not None
        try:
            part.handle.write(data)
        except OSError as e:
            raise FileSinkIOError(f"cannot write part file {part.path}: {e}") from e

    def _close_open(self) -> None:
        part = self._open
        if part is None:
            return
        assert part.handle is not None
        try:
            part.handle.flush()
            os.fsync(part.handle.fileno())
            part.handle.close()
        except OSError as e:
            raise FileSinkIOError(f"cannot flush part file {part.path}: {e}") from e
        part.handle = None
        part.move(PartState.CLOSED)
        self._closed.append(part)
        self._open = None

    # -- two-phase commit -----------------------------------------------------

    def _prepare(self, checkpoint_id: int) -> list[PartFile]:
        """Close the interval's files and rename them to pending names.

        Steps:
            1. flush, fsync and close the in-progress file;
            2. rename every closed file of the interval to its pending name;
            3. fsync the folder, so the renames survive a crash.

        Raises:
            FileSinkIOError: a flush, rename or fsync failed.
        """
        self._close_open()
        parts = []
        for k, part in enumerate(self._closed):
            final = committed_name(self.subtask, checkpoint_id, k, self.ext)
            self._move(part, PartState.PENDING, pending_name(final))
            parts.append(part)
        self._closed = []
        if parts:
            self._fsync_folder()
        return parts

    def _state(self, checkpoint_id: int, committables: list[tuple[int, list[PartFile]]]) -> Any:
        """The committable: ``{"checkpoint": int, "pending": [committed name, ...]}``
        listing every pending, uncommitted file (older intervals first)."""
        return {
            "checkpoint": checkpoint_id,
            "pending": [final_of(p.name) for _, parts in committables for p in parts],
        }

    def _commit(self, checkpoint_id: int, due: list[tuple[int, list[PartFile]]]) -> None:
        """Rename every pending file of ``due`` to its committed name.

        Idempotent: a file already committed counts as done.

        Raises:
            FileSinkError: a committed name holds another file.
            FileSinkIOError: a rename or the folder fsync failed.
        """
        start = time.perf_counter()
        for _, parts in due:
            for part in parts:
                self._move(part, PartState.COMMITTED, final_of(part.name))
                self.rows_written += part.records
        self._fsync_folder()
        self.transactions += 1
        self.transaction_s += time.perf_counter() - start

    def _move(self, part: PartFile, to: PartState, new_name: str) -> None:
        # Safe to run again: a rename whose target exists and source is gone is done.
        self._call_guarded(lambda: part.move(to, new_name))

    def close(self) -> None:
        """Close the in-progress file; it stays hidden until a restore deletes it."""
        part = self._open
        if part is not None and part.handle is not None:
            try:
                part.handle.close()
            except OSError as e:
                log.warning("%s: closing %s failed: %s", self.name, part.path, e)
            part.handle = None

    def _fsync_folder(self) -> None:
        def sync() -> None:
            try:
                fd = os.open(self.folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise FileSinkIOError(f"cannot fsync the FileSink folder {self.folder}: {e}") from e

        self._call_guarded(sync)


def _not_retriable(error: BaseException) -> bool:
    # The policy's own verdict (OSError, ``retriable = True`` as FileSinkIOError) suffices.
    return False
