"""``python -m weirflow.cli``: the same as the ``weirflow`` command."""

from weirflow.cli import main

main()
