"""Fixtures for recovery tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    """A fixed seed per test (derived from its name); chaos reports print it."""
    return 1000 + sum(map(ord, request.node.name)) % 1000
