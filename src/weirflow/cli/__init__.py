"""The ``weirflow`` command line (typer). Sub-commands live in sibling modules."""

from weirflow.cli.app import app, main

__all__ = ["app", "main"]
