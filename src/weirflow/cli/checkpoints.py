"""``weirflow checkpoints list|inspect``: what a job's checkpoint storage holds.

``list`` shows a job's completed checkpoints and its default savepoints
(id, completion time, duration, size, savepoint or not), verifying each one
unless ``--no-verify``; a corrupt one is listed as corrupt with its path and
reason. Without ``--job`` it lists the jobs found under the storage folder.
``inspect`` shows one checkpoint per task and operator: state size, key
groups, source positions, sink committables, pickled state.

Tables go to stdout. Errors print one line on stderr and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ParamSpec, TypeVar

import fsspec
import typer
from rich.console import Console
from rich.table import Table

from weirflow.checkpoint import CheckpointCorruptError, CheckpointStorage, Manifest, TaskSnapshot
from weirflow.cli.app import app
from weirflow.errors import CheckpointError, WeirflowError

EXIT_ERROR = 2
DEFAULT_CHECKPOINT_DIR = "weirflow-data/checkpoints"
_CHK_DIR = re.compile(r"chk-(\d+)")
_SAVEPOINTS = "savepoints"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_P = ParamSpec("_P")
_R = TypeVar("_R")

checkpoints_app = typer.Typer(
    name="checkpoints",
    help="Completed checkpoints and savepoints of jobs: list and inspect.",
    no_args_is_help=True,
)
app.add_typer(checkpoints_app, name="checkpoints")

DirOption = Annotated[
    str,
    typer.Option(
        "--checkpoint-dir",
        envvar="WEIRFLOW_CHECKPOINT_DIR",
        help="Checkpoint storage: a folder or fsspec URL.",
    ),
]
JobOption = Annotated[
    str | None,
    typer.Option("--job", help="The job's name (default: the only job under the folder)."),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


class CheckpointsCliError(WeirflowError):
    """The command cannot answer: no such job, no checkpoint, or ambiguous arguments."""


def _cli_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn weirflow, I/O and URL errors into one line on stderr and exit 2 (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        # ValueError and ImportError: fsspec's answers to an unknown or uninstalled protocol.
        except (WeirflowError, OSError, ValueError, ImportError) as e:
            if kwargs.get("debug"):
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper


# -- finding jobs and checkpoints ------------------------------------------------


def find_jobs(checkpoint_dir: str) -> list[str]:
    """Return the names of the jobs that have checkpoint folders under ``checkpoint_dir``.

    Args:
        checkpoint_dir: the storage root, a folder or fsspec URL.

    Returns:
        Job names (folders holding a ``chk-<n>`` or ``savepoints`` folder), sorted.

    Raises:
        OSError: the folder cannot be listed.
    """
    fs, root = fsspec.core.url_to_fs(checkpoint_dir)
    if not fs.exists(root):
        return []
    jobs = []
    for entry in fs.ls(root, detail=True):
        if entry["type"] != "directory":
            continue
        children = fs.ls(entry["name"], detail=False)
        names = {posixpath.basename(c.rstrip("/")) for c in children}
        if _SAVEPOINTS in names or any(_CHK_DIR.fullmatch(n) for n in names):
            jobs.append(posixpath.basename(entry["name"].rstrip("/")))
    return sorted(jobs)


def _pick_job(checkpoint_dir: str, job: str | None) -> str:
    jobs = find_jobs(checkpoint_dir)
    if job is not None:
        if job not in jobs:
            raise CheckpointsCliError(
                f"job {job!r} has no checkpoints under {checkpoint_dir} "
                f"(jobs there: {', '.join(jobs) or 'none'})"
            )
        return job
    if len(jobs) != 1:
        found = ", ".join(jobs) or "none"
        raise CheckpointsCliError(
            f"{len(jobs)} jobs under {checkpoint_dir} ({found}); choose one with --job"
        )
    return jobs[0]


@dataclass(frozen=True)
class Entry:
    """One listed checkpoint or savepoint.

    Attributes:
        checkpoint_id: the checkpoint's id (a savepoint's: the checkpoint it was taken as),
            ``None`` for a savepoint whose manifest cannot be read.
        url: the folder holding it.
        manifest: its manifest, or ``None`` when it is corrupt.
        problem: ``"<path>: <reason>"`` for a corrupt one, else ``None``.
    """

    checkpoint_id: int | None
    url: str
    manifest: Manifest | None
    problem: str | None


def _problem(e: CheckpointError, url: str) -> str:
    if isinstance(e, CheckpointCorruptError):
        return f"{e.path}: {e.reason}"
    return f"{url}: {e}"


def list_entries(storage: CheckpointStorage, verify: bool) -> list[Entry]:
    """Load every completed checkpoint and default savepoint of a job.

    Args:
        storage: the job's checkpoint storage.
        verify: also read and verify every state file (else only the manifest).

    Returns:
        Checkpoints in id order, then savepoints in folder order.

    Raises:
        OSError: the storage cannot be listed.
    """
    out = []
    for checkpoint_id in storage.completed_checkpoints():
        url = storage.checkpoint_url(checkpoint_id)
        try:
            manifest = storage.load_manifest(checkpoint_id)
            if verify:
                storage.verify(manifest)
        except CheckpointError as e:
            out.append(Entry(checkpoint_id, url, None, _problem(e, url)))
            continue
        out.append(Entry(checkpoint_id, url, manifest, None))
    fs = storage.fs
    folder = f"{storage.root}/{_SAVEPOINTS}"
    if fs.exists(folder):
        for path in sorted(fs.ls(folder, detail=False)):
            url = fs.unstrip_protocol(path)
            try:
                manifest = storage.load_savepoint(url)
            except CheckpointError as e:
                out.append(Entry(None, url, None, _problem(e, url)))
                continue
            out.append(Entry(manifest.checkpoint_id, url, manifest, None))
    return out


# -- formatting ---------------------------------------------------------------------


def format_time_ms(timestamp_ms: int) -> str:
    """Render ms since the epoch as UTC, e.g. ``2026-11-25 01:02:03.456Z``."""
    moment = _EPOCH + timedelta(milliseconds=timestamp_ms)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


def format_size(size: int) -> str:
    """Render a byte count: ``975 B``, ``7.8 KiB``, ``1.2 MiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def count_committables(state: Any) -> int:
    """Count the committables in a sink's checkpointed state.

    Args:
        state: what the sink writer's ``pre_commit`` returned: ``None``, a
            list of committables, or a dict whose list values hold them
            (``{"prepared": [...]}``, ``{"checkpoint": n, "pending": [...]}``).

    Returns:
        The number of committables (0 for ``None``).
    """
    if state is None:
        return 0
    if isinstance(state, list):
        return len(state)
    if isinstance(state, dict):
        return sum(len(v) for v in state.values() if isinstance(v, list))
    return 1


def _console() -> Console:
    return Console(soft_wrap=False)


# -- list ----------------------------------------------------------------------------


@checkpoints_app.command("list")
@_cli_errors
def list_checkpoints(
    checkpoint_dir: DirOption = DEFAULT_CHECKPOINT_DIR,
    job: Annotated[
        str | None, typer.Option("--job", help="The job's name (default: list the jobs).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Read and verify every state file.")
    ] = True,
    debug: DebugOption = False,
) -> None:
    """List a job's completed checkpoints and savepoints, or the jobs under the folder."""
    if job is None:
        _list_jobs(checkpoint_dir)
        return
    name = _pick_job(checkpoint_dir, job)
    storage = CheckpointStorage(checkpoint_dir, name)
    entries = list_entries(storage, verify)
    table = Table(title=f"checkpoints of job {name} in {storage.root_url}", show_edge=False)
    for col in ("id", "status", "completed (UTC)", "duration", "size", "savepoint"):
        right = col in ("id", "duration", "size")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    # Paths and reasons go below the table, one line each, so no column width cuts them.
    notes = []
    for e in entries:
        cid = str(e.checkpoint_id) if e.checkpoint_id is not None else "?"
        if e.manifest is None:
            savepoint = e.url.startswith(f"{storage.root_url}/{_SAVEPOINTS}/")
            table.add_row(cid, "corrupt", "", "", "", "yes" if savepoint else "no")
            kind = "savepoint" if savepoint else "checkpoint"
            notes.append(f"{kind} {cid} is corrupt: {e.problem}")
            continue
        m = e.manifest
        table.add_row(
            cid,
            "ok" if verify else "manifest ok",
            format_time_ms(m.completed_timestamp_ms),
            f"{m.duration_ms} ms",
            format_size(m.size),
            "yes" if m.is_savepoint else "no",
        )
        if m.is_savepoint:
            notes.append(f"savepoint {cid} is at {e.url}")
    console = _console()
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True, highlight=False, markup=False)
    if not entries:
        typer.echo(f"job {name!r} has no completed checkpoints", err=True)


def _list_jobs(checkpoint_dir: str) -> None:
    jobs = find_jobs(checkpoint_dir)
    if not jobs:
        raise CheckpointsCliError(f"no job checkpoints under {checkpoint_dir}")
    table = Table(title=f"jobs in {checkpoint_dir}", show_edge=False)
    for col in ("job", "checkpoints", "latest", "latest completed (UTC)"):
        table.add_column(col, justify="right" if col in ("checkpoints", "latest") else "left")
    for name in jobs:
        storage = CheckpointStorage(checkpoint_dir, name)
        ids = storage.completed_checkpoints()
        when = ""
        if ids:
            try:
                when = format_time_ms(storage.load_manifest(ids[-1]).completed_timestamp_ms)
            except CheckpointError:
                when = "corrupt"
        table.add_row(name, str(len(ids)), str(ids[-1]) if ids else "", when)
    _console().print(table)


# -- inspect -------------------------------------------------------------------------


@checkpoints_app.command("inspect")
@_cli_errors
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
    debug: DebugOption = False,
) -> None:
    """Show one checkpoint: per task and operator, state size, key groups, positions, commits."""
    manifest = _load(which, checkpoint_dir, job)
    _summary(manifest)
    _operators(manifest)


def _load(which: str, checkpoint_dir: str, job: str | None) -> Manifest:
    if which.isdigit():
        storage = CheckpointStorage(checkpoint_dir, _pick_job(checkpoint_dir, job))
        checkpoint_id = int(which)
        if checkpoint_id not in storage.completed_checkpoints():
            raise CheckpointsCliError(
                f"job {storage.job!r} has no completed checkpoint {checkpoint_id} under "
                f"{storage.root_url}"
            )
        manifest = storage.load_manifest(checkpoint_id)
        storage.verify(manifest)
        return manifest
    if which == "latest":
        storage = CheckpointStorage(checkpoint_dir, _pick_job(checkpoint_dir, job))
        skipped: list[str] = []
        manifest = storage.latest_valid(lambda path, e: skipped.append(f"{path} ({e})"))
        for s in skipped:
            typer.echo(f"warning: skipped unusable checkpoint {s}", err=True)
        if manifest is None:
            raise CheckpointsCliError(
                f"job {storage.job!r} has no usable completed checkpoint under {storage.root_url}"
            )
        return manifest
    if "/" in which or os.path.exists(which):
        return CheckpointStorage(which, job or "savepoint").load_savepoint(which)
    raise CheckpointsCliError(f"{which!r} is not a checkpoint id, 'latest', or a path")


def _summary(m: Manifest) -> None:
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
        ("uses_pickle", "yes (restoring runs code)" if m.uses_pickle else "no"),
        ("format version", str(m.format_version)),
    ]
    for field, value in rows:
        table.add_row(field, value)
    _console().print(table)


def _operators(m: Manifest) -> None:
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
            table.add_row(task_id, name, *_operator_cells(task, name, meta))
    _console().print(table)


def _operator_cells(task: TaskSnapshot, name: str, meta: Any) -> tuple[str, ...]:
    pickle = "yes" if task.uses_pickle else "no"
    if not isinstance(meta, dict):
        return ("?", "", "", "", "", pickle)
    if meta.get("kind") == "keyed":
        handle = task.handles.get(name)
        start, end = meta.get("key_group_range", ["?", "?"])
        groups = f"{len(meta.get('key_groups', []))} in [{start}, {end})"
        size = format_size(handle.size) if handle is not None else "0 B"
        return ("keyed", size, groups, "", "", pickle)
    state = meta.get("state")
    inline = format_size(len(json.dumps(state, default=repr).encode())) + " inline"
    if isinstance(state, dict) and "positions" in state:
        positions = ", ".join(f"{s}={p}" for s, p in sorted(state["positions"].items()))
        return ("source", inline, "", positions, "", pickle)
    return ("sink", inline, "", "", str(count_committables(state)), pickle)
