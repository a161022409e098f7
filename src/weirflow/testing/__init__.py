"""Testing aids: the chaos harness (real SIGKILLs) and helpers for verifying output."""

from weirflow.testing.chaos import (
    ChaosConfig,
    ChaosError,
    ChaosReport,
    children,
    run_under_chaos,
)

__all__ = ["ChaosConfig", "ChaosError", "ChaosReport", "children", "run_under_chaos"]
