"""The ``weirflow`` command line (typer). Sub-commands live in sibling modules."""

from weirflow.cli import checkpoints as _checkpoints  # noqa: F401  (registers `weirflow checkpoints`)
from weirflow.cli import checkpoints_inspect as _inspect  # noqa: F401  (registers `... inspect`)
from weirflow.cli import cluster as _cluster  # noqa: F401  (registers `weirflow worker`)
from weirflow.cli import demo as _demo  # noqa: F401  (registers `weirflow demo`)
from weirflow.cli import dlq as _dlq  # noqa: F401  (registers `weirflow dlq`)
from weirflow.cli import log as _log  # noqa: F401  (registers `weirflow log`)
from weirflow.cli import log_quickstart as _log_quickstart  # noqa: F401  (`weirflow log quickstart`)
from weirflow.cli import ops as _ops  # noqa: F401  (registers `weirflow ops`)
from weirflow.cli import run as _run  # noqa: F401  (registers `weirflow run`)
from weirflow.cli import savepoints as _savepoints  # noqa: F401  (`savepoint`, `stop`, `rescale`)
from weirflow.cli import status as _status  # noqa: F401  (registers `weirflow status`)
from weirflow.cli import upgrade_check as _upgrade_check  # noqa: F401  (`weirflow upgrade-check`)
from weirflow.cli.app import app, main

__all__ = ["app", "main"]
