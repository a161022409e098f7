"""``weirflow upgrade-check JOB.py --from SAVEPOINT``: would a restore into this code succeed?

Nothing runs: the command loads the job's dataflow and the savepoint (or
checkpoint) and prints the operators whose state is restored (matched), the
stateful operators that start empty (added), the operators whose state has
no operator any more (dropped, refused unless ``--allow-non-restored-state``),
and every incompatible change, naming the operator and the change: key type,
window assigner, state type, a stateful operator without a stable name, a
changed number of key groups, in-flight data of an unaligned checkpoint that
cannot be redistributed to the new parallelism.

State a keyed process function declares inside its ``open`` (rather than as
a class attribute) is recorded in the savepoint by the run that wrote it,
but the new code's declaration of it exists only once ``open`` runs, and
running user code is running the job (``open`` may connect to a database).
Such states are listed as *unchecked*; the restore checks each when ``open``
declares it, with the same rules and message, before any record is read.

Exit status: 0 a restore would succeed; 1 it would be refused; 2 bad
arguments, or the savepoint cannot be read (missing, corrupt: the message
names the file); 3 nothing found would refuse it, but some states could not
be checked (declare their descriptors as class attributes to check them).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointStorage, compare_operators, resolve_job_key
from weirflow.cli.app import app
from weirflow.errors import WeirflowError
from weirflow.graph import operator_signatures
from weirflow.runtime import rescale_refusal

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
_MAX_PARALLELISM = 128


@app.command("upgrade-check")
def upgrade_check(
    job: Annotated[str, typer.Argument(help="The new code: JOB.py or JOB.py:NAME.")],
    from_: Annotated[
        str, typer.Option("--from", help="The savepoint (or checkpoint) folder to restore.")
    ],
    checkpoint_dir: Annotated[
        str, typer.Option(help="The job's checkpoint storage, where its key file is found.")
    ] = "weirflow-data/checkpoints",
    parallelism: Annotated[
        int | None, typer.Option(min=1, help="The parallelism to restore at (default: same).")
    ] = None,
    allow_non_restored_state: Annotated[
        bool, typer.Option(help="Accept leaving state of removed operators behind.")
    ] = False,
) -> None:
    """Report whether restoring SAVEPOINT into JOB.py's code would succeed, running nothing."""
    try:
        flow = load_dataflow(job)
        key = resolve_job_key(None, checkpoint_dir, flow.name, create=False).key
        manifest = CheckpointStorage(from_, flow.name, key=key).load_savepoint(from_)
    except WeirflowError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    graph = flow.graph
    report = compare_operators(
        manifest, [op.state_id for op in graph.operators], operator_signatures(graph)
    )
    problems = report.problems(allow_non_restored_state)
    if manifest.max_parallelism != _MAX_PARALLELISM:
        problems.append(
            f"the savepoint has {manifest.max_parallelism} key groups, the job "
            f"{_MAX_PARALLELISM}: the number of key groups cannot change"
        )
    rescaled = rescale_refusal(graph, manifest, parallelism or manifest.parallelism)
    if rescaled is not None:
        problems.append(f"checkpoint {manifest.checkpoint_id}: {rescaled}")
    kind = "savepoint" if manifest.is_savepoint else "checkpoint"
    out.print(f"{kind} {manifest.checkpoint_id} of job {manifest.job} -> {job}", highlight=False)
    for label, names in (
        ("matched", report.matched),
        ("added (start empty)", report.added),
        ("dropped", report.dropped),
    ):
        out.print(f"  {label}: {', '.join(names) or '-'}", highlight=False)
    if not report.signatures_recorded:
        out.print("  (the savepoint records no operator signatures: only names were compared)")
    for u in report.unchecked:
        err.print(
            f"[yellow]unchecked:[/] {escape(u)}: the new code holds no descriptor of it as a "
            "class attribute (one created inside open() is seen only by running open(), which "
            "upgrade-check does not do); declare it as a class attribute to check it here; the "
            "restore checks it when open() declares it",
            highlight=False,
        )
    if problems:
        for p in problems:
            err.print(f"[red]incompatible:[/] {escape(p)}")
        raise typer.Exit(1)
    if report.unchecked:
        out.print("no incompatible change found, but not every state was checked")
        raise typer.Exit(3)
    out.print("a restore would succeed", highlight=False)
