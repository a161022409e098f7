"""PostgreSQL errors as weirflow errors, classified by SQLSTATE.

SQLSTATE classes (PostgreSQL manual, appendix A "Error Codes"):

* ``22`` (data exception) and ``23`` (integrity constraint violation): the
  row's own content is wrong; retrying cannot help, the row is dead-lettered;
* ``08`` (connection exception), ``53`` (insufficient resources), ``57``
  (operator intervention: shutdown, cancel), ``58`` (system error) and the
  serialization failures ``40001``/``40P01``: the server or the link is in
  trouble; the call is retried behind the circuit breaker, the row is never
  dead-lettered;
* a lost or refused connection (no SQLSTATE, ``OperationalError``) is
  retried too (a server starting up or recovering refuses connections);
* anything else (a missing table, a permission) fails the task.
"""

from __future__ import annotations

from weirflow.errors import ConfigError, WeirflowError

try:
    import psycopg
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "the PostgreSQL connector needs psycopg: pip install 'weirflow[postgres]'"
    ) from e

CONTENT_CLASSES = frozenset({"22", "23"})
TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58"})
TRANSIENT_CODES = frozenset({"40001", "40P01"})


class PostgresSinkError(WeirflowError):
    """A PostgreSQL sink call failed; ``retriable`` follows the SQLSTATE (module docstring)."""

    def __init__(self, message: str, *, retriable: bool = False, sqlstate: str | None = None):
        super().__init__(message)
        self.retriable = retriable
        self.sqlstate = sqlstate


class PostgresFencedError(PostgresSinkError):
    """A newer writer of the same sink subtask took over; this one is a zombie."""


class RowRejectedError(PostgresSinkError):
    """The database refused one row for its content (SQLSTATE class 22 or 23).

    The message starts with the SQLSTATE: ``"23502: null value in column ..."``.
    """


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a ``psycopg`` error, or ``None`` (no server answer, not psycopg)."""
    return error.sqlstate if isinstance(error, psycopg.Error) else None


def is_content_error(error: BaseException) -> bool:
    """Whether ``error`` is about a row's content (SQLSTATE class 22 or 23)."""
    state = sqlstate_of(error)
    return state is not None and state[:2] in CONTENT_CLASSES


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed (see the module docstring)."""
    if isinstance(error, PostgresSinkError):
        return error.retriable
    if not isinstance(error, psycopg.Error):
        return isinstance(error, OSError)
    state = error.sqlstate
    if state is None:
        # No SQLSTATE: the link failed or the server refused the session. libpq gives no
        # code for the refusal, and a server starting up or in crash recovery refuses for
        # a while, so it counts as transient; a wrong DSN is caught where it cannot be
        # transient, at a fresh start, before any retrying (PostgresSink.open_checked).
        return isinstance(error, psycopg.OperationalError)
    return state[:2] in TRANSIENT_CLASSES or state in TRANSIENT_CODES


def first_line(error: BaseException) -> str:
    """The first line of an error's message (psycopg adds hints on later lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def rejected(error: BaseException) -> RowRejectedError:
    """Wrap a content error of one row."""
    state = sqlstate_of(error)
    return RowRejectedError(f"{state}: {first_line(error)}", sqlstate=state)
