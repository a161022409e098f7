"""``weirflow status``: what a job on workers runs where, and what its operators counted.

It asks the job's coordinator (through the job's control endpoint, the
detached coordinator actor on Ray, or a ``weirflow coordinator``) and prints
its workers (where each is placed, slots, subtasks) and, while the job runs,
one row per operator summed over the operator subtasks' counts of the
workers' latest heartbeats, as the dashboard's operator table does.

Exit status: 0 answered; 2 the job or its coordinator is not found, does
not answer, or refuses the secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from weirflow.cli.app import app
from weirflow.cli.cluster import dial_coordinator, err, read_secret
from weirflow.errors import ConfigError
from weirflow.metrics import OperatorSample
from weirflow.runtime import control
from weirflow.runtime.endpoint import ask_status, read_endpoint
from weirflow.runtime.ray_cluster import detached_status
from weirflow.runtime.wire import ConnectionClosedError, PeerAuthenticationError


def _job_status(
    job: str | None, coordinator: str | None, token_file: Path | None, checkpoint_dir: str,
    ray: str | None,
) -> control.Status:  # fmt: skip
    """Ask the coordinator of a job for its status, however it is reached (see ``status``).

    Raises:
        ConfigError: the job or its coordinator is not found or does not answer.
        PeerAuthenticationError, ConnectionClosedError: a coordinator at ``coordinator``
            refused the secret or hung up.
    """
    if coordinator is not None:
        conn = dial_coordinator(coordinator, read_secret(token_file))
        try:
            conn.send(control.encode_message(control.StatusRequest()))
            status = control.decode_message(conn.recv())
        finally:
            conn.close()
        assert isinstance(status, control.Status)
        return status
    if job is None:
        raise ConfigError(
            "name the job (weirflow status JOB [--checkpoint-dir DIR | --ray ADDRESS]) or "
            "its coordinator (--coordinator HOST:PORT)"
        )
    if ray is not None:
        return detached_status(ray, job)
    return ask_status(read_endpoint(checkpoint_dir, job))


@app.command("status")
def status_command(
    job: Annotated[
        str | None,
        typer.Argument(help="The running job's name (its coordinator runs in weirflow run)."),
    ] = None,
    coordinator: Annotated[
        str | None, typer.Option(help="HOST:PORT of a `weirflow coordinator`.")
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the job's secret.")] = None,
    checkpoint_dir: Annotated[
        str, typer.Option(help="The job's checkpoint storage (as given to weirflow run).")
    ] = "weirflow-data/checkpoints",
    ray: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster (auto, HOST:PORT, ray://HOST:PORT) of a job run with "
            "--ray-detached: its coordinator actor is asked."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Show a job's workers (where each is placed), their slots and subtasks, checkpoints,
    restarts and per operator its records in, out, filtered, late and dead-lettered: of the
    job JOB run by `weirflow run --workers N` or `--ray` on this machine, of a detached job on
    Ray (--ray ADDRESS), or of a `weirflow coordinator` (--coordinator)."""
    try:
        status = _job_status(job, coordinator, token_file, checkpoint_dir, ray)
    except (ConfigError, PeerAuthenticationError, ConnectionClosedError) as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    out = Console()
    heading = (
        f"job {status.job} (parallelism {status.parallelism})" if status.job else "no job running"
    )
    last = status.last_completed_checkpoint
    out.print(
        f"{heading}; attempt {status.attempt}, restarts {status.restarts}, last completed "
        f"checkpoint {last if last is not None else '-'}"
    )
    table = Table(show_edge=False)
    placed = any(w.location for w in status.workers)
    for col in ("worker", "host", *(["placed on"] if placed else []), "slots", "state", "subtasks"):
        table.add_column(col)
    for w in status.workers:
        table.add_row(
            w.worker_id,
            w.host,
            *([w.location or "-"] if placed else []),
            str(w.slots),
            w.status,
            ", ".join(map(str, w.subtasks)) or "-",
        )
    out.print(table)
    if status.operators:
        out.print(operator_table(status.operators))


def operator_table(samples: Sequence[OperatorSample]) -> Table:
    """The per-operator table of ``samples`` (the dashboard's rows, without the task
    figures and rates, which a job on workers does not report here).

    Args:
        samples: per operator subtask, from the workers' latest heartbeats.

    Returns:
        One row per operator, in job order: its kind, subtasks reporting, records in, out,
        filtered, late and dead-lettered.
    """
    from weirflow.web.app import operator_rows

    table = Table(show_edge=False)
    for col in ("operator", "kind", "subtasks", "in", "out", "filtered", "late", "dead letters"):
        table.add_column(col, justify="left" if col in ("operator", "kind") else "right")
    for row in operator_rows(samples):
        table.add_row(
            row["operator"],
            row["kind"],
            str(row["parallelism"]),
            *(
                f"{row[k]:,}"
                for k in ("records_in", "records_out", "filtered", "late", "dead_lettered")
            ),
        )
    return table
