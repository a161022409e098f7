"""``weirflow checkpoints list|inspect``: what a job's checkpoint storage holds.

``list`` shows a job's completed checkpoints and its default savepoints
(id, completion time, duration, size, savepoint or not), verifying each one
unless ``--no-verify``; a corrupt one is listed as corrupt with its path and
reason. Without ``--job`` it lists the jobs found under the storage folder.
``inspect`` (in :mod:`weirflow.cli.checkpoints_inspect`) shows one
checkpoint per task and operator.

Neither command ever unpickles anything: manifests are pure data, and state
files are only verified and scanned. With the job's checkpoint key
(``--checkpoint-key-file``, ``$WEIRFLOW_CHECKPOINT_KEY``, or the key file
``weirflow run`` generated next to the folder) every signature is checked
too; without it only checksums are, which a forger can recompute.

Tables go to stdout. ``list`` exits with status 1 when any checkpoint or
savepoint is corrupt, naming each on stderr. Errors print one line on stderr
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
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

from weirflow.checkpoint import (
    KEY_ENV,
    KEY_FILE_ENV,
    CheckpointCorruptError,
    CheckpointStorage,
    JobKey,
    Manifest,
    resolve_job_key,
)
from weirflow.cli.app import app
from weirflow.errors import CheckpointError, WeirflowError

EXIT_CORRUPT = 1
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
KeyFileOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-key-file",
        envvar=KEY_FILE_ENV,
        help="The job's checkpoint key file, to verify signatures (default: "
        f"${KEY_ENV}, or the key file weirflow run generated next to the folder).",
    ),
]


class CheckpointsCliError(WeirflowError):
    """The command cannot answer: no such job, no checkpoint, or ambiguous arguments."""


def cli_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
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


def pick_job(checkpoint_dir: str, job: str | None) -> str:
    """Return ``job`` if it has checkpoints under the folder, else the folder's only job.

    Raises:
        CheckpointsCliError: ``job`` has no checkpoints there, or ``job`` is
            ``None`` and the folder holds no job or several.
    """
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


def open_storage(
    checkpoint_dir: str, job: str, key_file: str | None
) -> tuple[CheckpointStorage, JobKey]:
    """Open a job's storage with its checkpoint key when one can be found (never generated).

    Raises:
        ConfigError: a given key or key file is unusable.
    """
    found = resolve_job_key(None, checkpoint_dir, job, key_file=key_file, create=False)
    return CheckpointStorage(checkpoint_dir, job, key=found.key), found


def signature_note(found: JobKey) -> str:
    """Return one line saying whether signatures were checked, and with which key source."""
    if found.key is None:
        return (
            "signatures: not checked (no checkpoint key; give --checkpoint-key-file or "
            f"${KEY_ENV}); checksums alone do not prove who wrote the files"
        )
    source = str(found.path) if found.path is not None else f"${KEY_ENV}"
    return f"signatures: verified with the checkpoint key from {source}"


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


def new_console() -> Console:
    """Return a stdout console that never wraps table rows (wide tables stay one row a line)."""
    return Console(soft_wrap=False)


# -- list ----------------------------------------------------------------------------


@checkpoints_app.command("list")
@cli_errors
def list_checkpoints(
    checkpoint_dir: DirOption = DEFAULT_CHECKPOINT_DIR,
    job: Annotated[
        str | None, typer.Option("--job", help="The job's name (default: list the jobs).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Read and verify every state file.")
    ] = True,
    key_file: KeyFileOption = None,
    debug: DebugOption = False,
) -> None:
    """List a job's completed checkpoints and savepoints, or the jobs under the folder.

    Exits with status 1 when any of them is corrupt.
    """
    if job is None:
        _list_jobs(checkpoint_dir, key_file)
        return
    name = pick_job(checkpoint_dir, job)
    storage, found = open_storage(checkpoint_dir, name, key_file)
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
    notes.append(signature_note(found))
    console = new_console()
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True, highlight=False, markup=False)
    if not entries:
        typer.echo(f"job {name!r} has no completed checkpoints", err=True)
    corrupt = [e for e in entries if e.manifest is None]
    if corrupt:
        which = ", ".join(
            str(e.checkpoint_id) if e.checkpoint_id is not None else e.url for e in corrupt
        )
        typer.echo(
            f"error: {len(corrupt)} of {len(entries)} checkpoints and savepoints of job {name!r} "
            f"are corrupt: {which}",
            err=True,
        )
        raise typer.Exit(EXIT_CORRUPT)


def _list_jobs(checkpoint_dir: str, key_file: str | None) -> None:
    jobs = find_jobs(checkpoint_dir)
    if not jobs:
        raise CheckpointsCliError(f"no job checkpoints under {checkpoint_dir}")
    table = Table(title=f"jobs in {checkpoint_dir}", show_edge=False)
    for col in ("job", "checkpoints", "latest", "latest completed (UTC)"):
        table.add_column(col, justify="right" if col in ("checkpoints", "latest") else "left")
    corrupt = []
    for name in jobs:
        storage, _ = open_storage(checkpoint_dir, name, key_file)
        ids = storage.completed_checkpoints()
        when = ""
        if ids:
            try:
                when = format_time_ms(storage.load_manifest(ids[-1]).completed_timestamp_ms)
            except CheckpointError as e:
                when = "corrupt"
                corrupt.append(f"job {name} checkpoint {ids[-1]}: {_problem(e, storage.root_url)}")
        table.add_row(name, str(len(ids)), str(ids[-1]) if ids else "", when)
    new_console().print(table)
    if corrupt:
        typer.echo(f"error: latest checkpoint corrupt: {'; '.join(corrupt)}", err=True)
        raise typer.Exit(EXIT_CORRUPT)
