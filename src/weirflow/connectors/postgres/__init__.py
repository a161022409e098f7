"""PostgreSQL connector on ``psycopg`` 3 (the ``postgres`` extra).

Importing this package without it raises a :class:`ConfigError` naming the
extra. Modules: ``errors`` (SQLSTATE classes), ``tables`` (the target and
bookkeeping tables, writing rows in batches), ``writers`` (the staged and the
prepared-transaction writer) and ``sink`` (:class:`PostgresSink`, which says
when to choose which). The public names are re-exported here and (lazily)
from :mod:`weirflow.connectors`.
"""

from weirflow.connectors.postgres.errors import (
    PostgresFencedError,
    PostgresSinkError,
    RowRejectedError,
)
from weirflow.connectors.postgres.sink import PostgresSink

__all__ = ["PostgresFencedError", "PostgresSink", "PostgresSinkError", "RowRejectedError"]
