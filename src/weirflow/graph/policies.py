"""Per-operator error policies: fail, dead letter, or retry then dead letter."""

from __future__ import annotations

from typing import Literal

from weirflow.errors import ConfigError
from weirflow.retry import RetryPolicy

OnError = Literal["fail", "dead_letter"]


ErrorPolicy = OnError | RetryPolicy


def check_error_policy(policy: object) -> ErrorPolicy:
    """Validate an ``on_error`` argument.

    Args:
        policy: ``"fail"``, ``"dead_letter"`` or a :class:`RetryPolicy`.

    Returns:
        The policy unchanged.

    Raises:
        ConfigError: anything else.
    """
    if policy in ("fail", "dead_letter") or isinstance(policy, RetryPolicy):
        return policy  # type: ignore[return-value]
    raise ConfigError(f"on_error must be 'fail', 'dead_letter' or a RetryPolicy, got {policy!r}")
