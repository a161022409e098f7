"""Applying an operator's error policy to one failing record.

The fast path of an operator calls its user function over a whole batch
with :func:`call_each`, which stops at the first record that raises, hands
that record (and the error of that first call) to :func:`call_with_policy`,
and carries on with the rest of the batch. No record is called twice on the
fast path's account, so ``RetryPolicy.max_attempts`` and
``DeadLetter.attempts`` count every call of the user function.
"""

from __future__ import annotations

import os
import traceback
import types
from collections.abc import Callable
from typing import Any

from weirflow.errors import OperatorError
from weirflow.graph import RetryPolicy
from weirflow.records import DeadLetter
from weirflow.runtime.operators.base import OperatorLogic
from weirflow.serde import StateSchemaError

DEAD_LETTER = "dead_letter"


def backoff_s(policy: RetryPolicy, failed_attempts: int) -> float:
    """Return the wait in seconds before the next call after ``failed_attempts`` failed calls.

    ``initial_backoff × multiplier^(failed_attempts - 1)``, capped at ``max_backoff``.
    """
    wait = policy.initial_backoff.total_seconds() * policy.multiplier ** (failed_attempts - 1)
    return min(wait, policy.max_backoff.total_seconds())


def call_with_policy(
    op: OperatorLogic,
    fn: Callable[[Any], Any],
    value: Any,
    timestamp_ms: int | None,
    first_error: Exception | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> tuple[bool, Any]:
    """Call ``fn(value)`` under ``op``'s error policy.

    Args:
        op: the operator (its ``spec.on_error``, context and outputs are used).
        fn: the user function.
        value: the record.
        timestamp_ms: the record's event time, for the dead letter.
        first_error: what a first call of ``fn(value)``, already made by the
            caller, raised; that call counts as attempt 1 and is not repeated.
        headers: the record's headers (tracing on), kept by its dead letter.

    Returns:
        ``(True, result)`` when a call succeeded; ``(False, None)`` when the
        record was dead-lettered (and counted in ``op.dead_lettered``).

    Raises:
        OperatorError: the policy is ``fail``; the message names the operator,
            subtask and record, and the user's exception is the cause.
        StateSchemaError: whatever the policy, when the call read restored
            state that does not fit this code's class (a RocksDB value is
            rebuilt when first read): no record is at fault, and dead-lettering
            would drop every record of every key whose state was written before.
    """
    error = first_error
    if error is None:
        try:
            return True, fn(value)
        except Exception as e:
            error = e
    if isinstance(error, StateSchemaError):
        raise StateSchemaError(f"operator {op.spec.state_id!r}: {error}") from error
    policy = op.spec.on_error
    attempts = 1
    if isinstance(policy, RetryPolicy):
        # bounded by max_attempts; the waits go through the injected sleep
        while attempts < policy.max_attempts and policy.is_retriable(error):
            op.ctx.sleep(backoff_s(policy, attempts))
            attempts += 1
            try:
                return True, fn(value)
            except Exception as e:
                error = e
    elif policy == "fail":
        raise operator_error(
            op,
            f"failed on record {value!r:.200}: {type(error).__name__}: {error}. "
            "Fix the function, or pass on_error='dead_letter' (or a RetryPolicy) to route "
            "bad records to dead_letters()",
            value,
        ) from error
    dead_letter(op, value, timestamp_ms, error, attempts, headers=headers)
    return False, None


def call_each(
    op: OperatorLogic,
    fn: Callable[[Any], Any],
    values: list[Any],
    timestamps: list[int] | None,
    headers: list[Any] | None = None,
) -> tuple[list[Any], list[int] | None]:
    """Call ``fn`` once per record; failing records go through :func:`call_with_policy`.

    Args:
        op: the operator whose error policy applies.
        fn: the user function, ``record -> result``.
        values: the batch's records.
        timestamps: their event times (for dead letters), or ``None``.
        headers: their headers (for dead letters), or ``None``.

    Returns:
        ``(results, kept)``: the results of the records that were not
        dead-lettered, in order; ``kept`` lists their indices into ``values``,
        or is ``None`` when every record succeeded (``results[i]`` is then the
        result of ``values[i]``).

    Raises:
        OperatorError: a call failed and the policy is ``fail``.
    """
    results: list[Any] = []
    append = results.append
    try:
        for v in values:
            append(fn(v))
        return results, None
    except Exception as e:
        failed, error = len(results), e
    kept = list(range(failed))
    while True:
        ts = timestamps[failed] if timestamps is not None else None
        h = headers[failed] if headers is not None else ()
        ok, result = call_with_policy(op, fn, values[failed], ts, first_error=error, headers=h)
        if ok:
            append(result)
            kept.append(failed)
        try:
            for j in range(failed + 1, len(values)):
                failed = j
                append(fn(values[j]))
                kept.append(j)
            return results, kept
        except Exception as e:
            error = e


def operator_error(
    op: OperatorLogic, message: str, record: Any, position: Any = None
) -> OperatorError:
    """Return the error that fails ``op`` on ``record``; ``message`` follows the task name.

    ``position`` is where the source read the record (a
    :class:`~weirflow.records.LogPosition`), if known.
    """
    return OperatorError(
        f"{op.task_name} {message}",
        operator=op.name,
        subtask=op.ctx.subtask,
        parallelism=op.ctx.parallelism,
        record=record,
        position=position,
    )


def describe_function(fn: object) -> str:
    """Name a user function for messages: ``'qualname' (file.py:line)`` for Python functions
    (lambdas included), the quoted class name for other callables."""
    if isinstance(fn, types.FunctionType):
        code = fn.__code__
        where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
        return f"{fn.__qualname__!r} ({where})"
    return repr(type(fn).__qualname__)


def dead_letter(
    op: OperatorLogic,
    value: Any,
    timestamp_ms: int | None,
    error: BaseException,
    attempts: int,
    *,
    position: Any = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> None:
    """Route one record to ``op``'s dead-letter output and count it.

    ``position`` is where the source read it (a :class:`~weirflow.records.LogPosition`), if
    known; ``headers`` are its headers when the job runs with tracing (the dead letter keeps
    them, so its trace id).
    """
    op.dead_lettered += 1
    letter = DeadLetter(
        value=value,
        operator=op.name,
        subtask=op.ctx.subtask,
        error_type=f"{type(error).__module__}.{type(error).__qualname__}",
        message=str(error),
        traceback="".join(traceback.format_exception(error)),
        attempts=attempts,
        timestamp_ms=timestamp_ms,
        position=position,
        headers=headers,
    )
    # the letter carries the headers itself: dead-letter sinks write them as the record's own
    op.output.emit_side(DEAD_LETTER, [letter], [timestamp_ms] if timestamp_ms is not None else None)
