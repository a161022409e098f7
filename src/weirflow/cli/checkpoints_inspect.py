"""``weirflow checkpoints inspect``: one checkpoint, per task and operator.

Shows state size, key groups, source positions, sink committables, and
which states hold pickled values: found by reading the state files' codec
tags (nothing is unpickled), not taken on the manifest's word.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from weirflow.checkpoint import (
    CheckpointCorruptError,
    CheckpointStorage,
    JobKey,
    Manifest,
    TaskSnapshot,
    load_checkpoint_key,
)
from weirflow.cli.checkpoints import (
    DEFAULT_CHECKPOINT_DIR,
    CheckpointsCliError,
    DebugOption,
    DirOption,
    JobOption,
    KeyFileOption,
    checkpoints_app,
    cli_errors,
    count_committables,
    format_size,
    format_time_ms,
    new_console,
    open_storage,
    pick_job,
    signature_note,
)
from weirflow.errors import CheckpointError
from weirflow.runtime import FILE_SEPARATOR, state_file_uses_pickle


@checkpoints_app.command("inspect")
@cli_errors
def inspect_checkpoint(
    which: Annotated[
        str,
        typer.Argument(
            metavar="[ID|latest|PATH]",
            help="A checkpoint id, latest (the newest usable one), or a checkpoint/savepoint path.",
        ),
    ] = "latest",
    checkpoint_dir: DirOption = DEFAULT_CHECKPOINT_DIR,
    job: JobOption = None,
    key_file: KeyFileOption = None,
    debug: DebugOption = False,
) -> None:
    """Show one checkpoint: per task and operator, state size, key groups, positions, commits,
    and which states use pickle."""
    storage, manifest, found = _load(which, checkpoint_dir, job, key_file)
    pickled = scan_pickled_states(storage, manifest)
    _summary(manifest, pickled, found)
    _operators(manifest, pickled)


def scan_pickled_states(storage: CheckpointStorage, manifest: Manifest) -> set[tuple[str, str]]:
    """Find the state files of a checkpoint that hold pickled values, by reading them.

    Nothing is unpickled: only codec tags are looked at.

    Args:
        storage: the storage the manifest was loaded from.
        manifest: the checkpoint (handles absolute).

    Returns:
        ``(task id, state name)`` of every state file holding a pickle.

    Raises:
        CheckpointCorruptError: a state file fails verification.
        CheckpointError: a state file's payload is not a weirflow state file.
    """
    found = set()
    for task_id, task in manifest.tasks.items():
        for name, handle in task.handles.items():
            operator, sep, _ = name.partition(FILE_SEPARATOR)
            if sep:
                # a RocksDB file: verified, but its values are not scanned; the database
                # may hold pickles wherever the operator's state holds user objects
                storage.read_state(handle)
                found.add((task_id, operator))
                continue
            try:
                uses = state_file_uses_pickle(storage.read_state(handle))
            except CheckpointCorruptError:
                raise
            except CheckpointError as e:
                raise CheckpointCorruptError(handle.path, str(e)) from e
            if uses:
                found.add((task_id, name))
    return found


def _load(
    which: str, checkpoint_dir: str, job: str | None, key_file: str | None
) -> tuple[CheckpointStorage, Manifest, JobKey]:
    if which.isdigit() or which == "latest":
        storage, found = open_storage(checkpoint_dir, pick_job(checkpoint_dir, job), key_file)
        return storage, _load_from_job(which, storage), found
    if "/" in which or os.path.exists(which):
        # A savepoint may have moved anywhere: its key is only what is given.
        key = load_checkpoint_key(None, key_file)
        found = JobKey(key, Path(key_file) if key_file and key is not None else None)
        storage = CheckpointStorage(which, job or "savepoint", key=key)
        return storage, storage.load_savepoint(which), found
    raise CheckpointsCliError(f"{which!r} is not a checkpoint id, 'latest', or a path")


def _load_from_job(which: str, storage: CheckpointStorage) -> Manifest:
    if which.isdigit():
        checkpoint_id = int(which)
        if checkpoint_id not in storage.completed_checkpoints():
            raise CheckpointsCliError(
                f"job {storage.job!r} has no completed checkpoint {checkpoint_id} under "
                f"{storage.root_url}"
            )
        manifest = storage.load_manifest(checkpoint_id)
        storage.verify(manifest)
        return manifest
    skipped: list[str] = []
    manifest = storage.latest_valid(lambda path, e: skipped.append(f"{path} ({e})"))
    for s in skipped:
        typer.echo(f"warning: skipped unusable checkpoint {s}", err=True)
    if manifest is None:
        raise CheckpointsCliError(
            f"job {storage.job!r} has no usable completed checkpoint under {storage.root_url}"
        )
    return manifest


def _pickle_cell(m: Manifest, pickled: set[tuple[str, str]]) -> str:
    if not pickled:
        return "no"
    states = ", ".join(f"{name} ({task})" for task, name in sorted(pickled))
    return f"yes: {states} (restoring them needs the checkpoint key)"


def _summary(m: Manifest, pickled: set[tuple[str, str]], found: JobKey) -> None:
    table = Table(
        title=f"{'savepoint' if m.is_savepoint else 'checkpoint'} {m.checkpoint_id} of job {m.job}",
        show_header=False,
        show_edge=False,
    )
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("mode", m.mode),
        ("triggered (UTC)", format_time_ms(m.trigger_timestamp_ms)),
        ("completed (UTC)", format_time_ms(m.completed_timestamp_ms)),
        ("duration", f"{m.duration_ms} ms"),
        ("size", format_size(m.size)),
        ("parallelism", str(m.parallelism)),
        ("max parallelism", str(m.max_parallelism)),
        ("savepoint", "yes" if m.is_savepoint else "no"),
        ("uses pickle", _pickle_cell(m, pickled)),
        ("format version", str(m.format_version)),
    ]
    for field, value in rows:
        table.add_row(field, value)
    console = new_console()
    console.print(table)
    console.print(signature_note(found), soft_wrap=True, highlight=False, markup=False)
    claimed = set(m.pickled_states())
    if claimed != pickled:
        typer.echo(
            "warning: the manifest's record of pickled states differs from what the files hold "
            f"(manifest: {sorted(claimed)}, files: {sorted(pickled)}); the files are shown",
            err=True,
        )


def _operators(m: Manifest, pickled: set[tuple[str, str]]) -> None:
    table = Table(title="tasks and operators", show_edge=False)
    for col in (
        "task",
        "operator",
        "kind",
        "state size",
        "key groups",
        "source positions",
        "committables",
        "pickle",
    ):
        table.add_column(col, justify="right" if col in ("state size", "committables") else "left")
    for task_id in sorted(m.tasks):
        task = m.tasks[task_id]
        for name, meta in sorted(task.metadata.get("operators", {}).items()):
            pickle = "yes" if (task_id, name) in pickled else "no"
            table.add_row(task_id, name, *_operator_cells(task, name, meta), pickle)
    new_console().print(table)


def _operator_cells(task: TaskSnapshot, name: str, meta: Any) -> tuple[str, ...]:
    if not isinstance(meta, dict):
        return ("?", "", "", "", "")
    if meta.get("kind") == "keyed":
        handle = task.handles.get(name)
        start, end = meta.get("key_group_range", ["?", "?"])
        groups = f"{len(meta.get('key_groups', []))} in [{start}, {end})"
        size = format_size(handle.size) if handle is not None else "0 B"
        return ("keyed", size, groups, "", "")
    if meta.get("kind") == "keyed-files":
        prefix = name + FILE_SEPARATOR
        files = [h for n, h in task.handles.items() if n.startswith(prefix)]
        start, end = meta.get("key_group_range", ["?", "?"])
        size = format_size(sum(h.size for h in files))
        return ("rocksdb", f"{size} in {len(files)} files", f"[{start}, {end})", "", "")
    if "state" not in meta:
        # State that needs pickle lives in a state file of its own; it is never decoded here.
        handle = task.handles.get(name)
        size = format_size(handle.size) if handle is not None else "0 B"
        return ("state file", size, "", "", "")
    state = meta.get("state")
    inline = format_size(len(json.dumps(state, default=repr).encode())) + " inline"
    if isinstance(state, dict) and "positions" in state:
        positions = ", ".join(f"{s}={p}" for s, p in sorted(state["positions"].items()))
        return ("source", inline, "", positions, "")
    return ("sink", inline, "", "", str(count_committables(state)))
