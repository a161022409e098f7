"""Applying an operator's error policy to one failing record.

The fast path of an operator calls its user function over a whole batch
inside one ``try``; only when that raises does the operator replay the batch
record by record through :func:`call_with_policy`. User functions must
therefore be deterministic and side-effect free for records before the one
that failed (the same rule replay after a crash already imposes).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import tenacity

from weirflow.errors import OperatorError
from weirflow.graph import RetryPolicy
from weirflow.records import DeadLetter
from weirflow.runtime.operators.base import OperatorLogic

DEAD_LETTER = "dead_letter"


def _retrying(policy: RetryPolicy, sleep: Callable[[float], None]) -> tenacity.Retrying:
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=tenacity.wait_exponential(
            multiplier=policy.initial_backoff.total_seconds(),
            exp_base=policy.multiplier,
            max=policy.max_backoff.total_seconds(),
        ),
        retry=tenacity.retry_if_exception(policy.is_retriable),
        sleep=sleep,
        reraise=True,
    )


def call_with_policy(
    op: OperatorLogic, fn: Callable[[Any], Any], value: Any, timestamp_ms: int | None
) -> tuple[bool, Any]:
    """Call ``fn(value)`` under ``op``'s error policy.

    Args:
        op: the operator (its ``spec.on_error``, context and outputs are used).
        fn: the user function.
        value: the record.
        timestamp_ms: the record's event time, for the dead letter.

    Returns:
        ``(True, result)`` when a call succeeded; ``(False, None)`` when the
        record was dead-lettered (and counted in ``op.dead_lettered``).

    Raises:
        OperatorError: the policy is ``fail``; the message names the operator,
            subtask and record, and the user's exception is the cause.
    """
    policy = op.spec.on_error
    attempts = 1
    try:
        if isinstance(policy, RetryPolicy):
            r = _retrying(policy, op.ctx.sleep)
            try:
                return True, r(fn, value)
            finally:
                attempts = r.statistics.get("attempt_number", 1)
        return True, fn(value)
    except Exception as e:
        if policy == "fail":
            raise OperatorError(
                f"{op.task_name} failed on record {value!r:.200}: {type(e).__name__}: {e}. "
                "Fix the function, or pass on_error='dead_letter' (or a RetryPolicy) to route "
                "bad records to dead_letters()",
                operator=op.name,
                subtask=op.ctx.subtask,
                parallelism=op.ctx.parallelism,
                record=value,
            ) from e
        dead_letter(op, value, timestamp_ms, e, attempts)
        return False, None


def dead_letter(
    op: OperatorLogic, value: Any, timestamp_ms: int | None, error: BaseException, attempts: int
) -> None:
    """Route one record to ``op``'s dead-letter output and count it."""
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
    )
    op.output.emit_side(DEAD_LETTER, [letter], [timestamp_ms] if timestamp_ms is not None else None)
