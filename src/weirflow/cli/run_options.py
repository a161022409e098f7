"""``weirflow run``'s option types and the options that need more than parsing: the checkpoint
key, restore, restart strategy, alert conditions, the state backend, messages."""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import typer

from weirflow.checkpoint import (
    FRESH,
    KEY_ENV,
    KEY_FILE_ENV,
    CheckpointStorage,
    NoCheckpointError,
    resolve_job_key,
)
from weirflow.cli.durations import parse_duration
from weirflow.errors import CheckpointError, ConfigError
from weirflow.metrics import AlertCondition, Signal
from weirflow.runtime import RestartStrategy
from weirflow.state import MemoryStateBackend, RocksDBStateBackend, StateBackend

log = logging.getLogger("weirflow.cli")
_ALERT = re.compile(r"\s*([a-z_]+)\s*>\s*(\S+)\s*")


class Guarantee(StrEnum):
    """Delivery guarantees."""

    exactly_once = "exactly_once"
    at_least_once = "at_least_once"
    at_most_once = "at_most_once"


class LogFormat(StrEnum):
    """Log line formats."""

    text = "text"
    json = "json"


class Strategy(StrEnum):
    """Restart strategies."""

    fixed_delay = "fixed-delay"
    exponential_backoff = "exponential-backoff"
    failure_rate = "failure-rate"
    none = "none"


def build_strategy(
    kind: Strategy, max_restarts: int, delay: timedelta, max_delay: timedelta, interval: timedelta
) -> RestartStrategy:
    """Map the CLI options onto a :class:`~weirflow.RestartStrategy`."""
    if kind is Strategy.fixed_delay:
        return RestartStrategy.fixed_delay(max_restarts, delay)
    if kind is Strategy.exponential_backoff:
        return RestartStrategy.exponential_backoff(delay, max_delay, max_restarts=max_restarts)
    if kind is Strategy.failure_rate:
        return RestartStrategy.failure_rate(max_restarts, interval, delay)
    return RestartStrategy.none()


def parse_alert(text: str) -> AlertCondition:
    """Parse ``--alert NAME>VALUE``: a duration for ``lag``, ``checkpoint_age`` and
    ``watermark_stalled``, else a count.

    Raises:
        ConfigError: an unknown name or a value of the wrong kind (the message lists the names).
    """
    names = ", ".join(s.value for s in Signal)
    m = _ALERT.fullmatch(text)
    signal = next((s for s in Signal if m is not None and s.value == m.group(1)), None)
    if m is None or signal is None:
        raise ConfigError(f"--alert {text!r}: write NAME>VALUE with NAME one of {names}")
    value = m.group(2)
    if signal.is_duration:
        try:
            threshold = int(parse_duration(value).total_seconds() * 1000)
        except typer.BadParameter as e:
            raise ConfigError(f"--alert {text!r}: {value!r} is not a duration (5m, 30s)") from e
    elif value.isdigit():
        threshold = int(value)
    else:
        raise ConfigError(f"--alert {text!r}: {signal.value} takes a whole number")
    return AlertCondition(signal, threshold, text.strip())


def alert_watch(alerts: list[str], webhook: str | None) -> list[AlertCondition]:
    """Parse every ``--alert``; check that ``--alert-webhook`` has something to post.

    Raises:
        ConfigError: a bad ``--alert``, or a webhook without any ``--alert``, or one that
            is not an http(s) URL.
    """
    if webhook is not None and not alerts:
        raise ConfigError("--alert-webhook needs at least one --alert NAME>VALUE to post")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"--alert-webhook {webhook!r}: give an http:// or https:// URL")
    return [parse_alert(a) for a in alerts]


def check_watch_placement(alerts: list[AlertCondition], elsewhere: bool) -> None:
    """Check that ``--alert`` fits where the job runs.

    Args:
        alerts: the parsed ``--alert`` conditions.
        elsewhere: whether the job runs beyond this process (workers, Ray, a coordinator).

    Raises:
        ConfigError: a condition a coordinator cannot see on a job on workers.
    """
    unseen = [a.text for a in alerts if not a.signal.seen_by_coordinator]
    if unseen and elsewhere:
        raise ConfigError(
            f"--alert {', '.join(unseen)}: a job on workers alerts on lag_records, "
            "dead_letters, checkpoint_age and restarts only; use the Prometheus rules of "
            "`weirflow ops alerts` for the others"
        )


def checkpoint_key_env(checkpoint_dir: str, job: str, key_file: str | None) -> dict[str, str]:
    """Find (or generate) the job's checkpoint key; return the workers' environment naming it.

    Workers get the key file's path (or inherit ``$WEIRFLOW_CHECKPOINT_KEY``), never the key
    on their command line.
    """
    found = resolve_job_key(None, checkpoint_dir, job, key_file=key_file, create=True)
    # log lines, so that --log-format json stays all JSON
    if found.created:
        log.info(
            "generated checkpoint key file %s (mode 0600): it signs job %s's checkpoints; "
            "keep it, restoring them needs it",
            found.path,
            job,
        )
    if found.key is None:
        log.warning(
            "no checkpoint key for %s: state that needs pickle cannot be checkpointed; "
            "give --checkpoint-key-file",
            checkpoint_dir,
        )
    # An explicit key file wins over an inherited $WEIRFLOW_CHECKPOINT_KEY, in workers too.
    return {KEY_FILE_ENV: str(found.path), KEY_ENV: ""} if found.path is not None else {}


def restore_option(restore: str | None, fresh: bool) -> str | None:
    """Fold ``--fresh`` into ``--restore``.

    Raises:
        ConfigError: ``--fresh`` with another ``--restore``.
    """
    if not fresh:
        return restore
    if restore not in (None, FRESH):
        raise ConfigError(f"--fresh contradicts --restore {restore}: pass one of them")
    return FRESH


def check_fresh_start(storage: CheckpointStorage) -> None:
    """No ``--restore``: refuse before any worker starts if the job has checkpoints.

    Raises:
        ConfigError: the job has completed checkpoints in ``storage``.
    """
    try:
        storage.check_fresh_start()
    except CheckpointError as e:
        raise ConfigError(str(e)) from e


def config_message(e: ConfigError) -> str:
    """The error's message, its advice worded for this command line where the library's differs."""
    if isinstance(e, NoCheckpointError):
        # unusable checkpoints left behind refuse a plain fresh start (no --restore)
        fresh = "with --restore none" if e.skipped else "without --restore"
        return (
            f"--restore latest but {e.what_is_missing()}. To start fresh run {fresh} (or with "
            "--restore latest-or-fresh to resume when possible); to restore a savepoint pass "
            "--restore PATH"
        )
    return str(e)


class StateBackendKind(StrEnum):
    """Where keyed state lives (``--state-backend``)."""

    memory = "memory"
    rocksdb = "rocksdb"


DEFAULT_STATE_DIR = "weirflow-data/state"


def state_backend_option(kind: StateBackendKind, state_dir: str | None) -> StateBackend:
    """Build the state backend of ``--state-backend`` and ``--state-dir``.

    Args:
        kind: memory or rocksdb.
        state_dir: RocksDB's local folder (default ``weirflow-data/state``); only with rocksdb.

    Returns:
        The :class:`~weirflow.state.StateBackend`.

    Raises:
        ConfigError: ``--state-dir`` without rocksdb, or a folder that cannot be
            created or written.
    """
    if kind is StateBackendKind.memory:
        if state_dir is not None:
            raise ConfigError("--state-dir needs --state-backend rocksdb")
        return MemoryStateBackend()
    path = Path(state_dir or DEFAULT_STATE_DIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"--state-dir {path} cannot be created ({e.strerror}); give a writable folder"
        ) from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--state-dir {path} is not writable; give a writable folder")
    return RocksDBStateBackend(path)
