"""The root ``weirflow`` typer application; sub-command groups register here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="weirflow",
    help="Fault-tolerant stream processing for Python.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Fault-tolerant stream processing for Python."""


def main() -> None:
    """Entry point of the ``weirflow`` console script."""
    app()
